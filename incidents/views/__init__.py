"""Pages of the incidents app, one module per page family: dashboard (and
declaring), incident (the page and its actions), stream (the live timeline),
acklinks, postmortem (and action items), reports (and exports)."""
