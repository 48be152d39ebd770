"""Post-incident work: the post-mortem, its action items, the follow-up
checklists with their reminders, and the receiver that starts them on resolution."""
