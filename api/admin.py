from django.contrib import admin

from incidents.admin import IssuedTokenAdmin

from . import tokens
from .models import ApiToken


@admin.register(ApiToken)
class ApiTokenAdmin(IssuedTokenAdmin):
    list_display = ("name", "user", "prefix", "created_at", "last_used_at", "revoked_at")
    fields = ("user", "name", "prefix", "created_at", "last_used_at", "revoked_at")

    def issue(self, obj: ApiToken) -> tuple[ApiToken, str]:
        return tokens.issue(obj.user, obj.name)
