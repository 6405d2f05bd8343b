"""Admin for alerts (SPEC section 12): channels are edited here; deliveries and messages are
the record of what was sent, shown read-only."""

from django import forms
from django.contrib import admin

from alerts.models import AlertChannel, AlertDelivery, AlertEventType, AlertMessage
from elections.admin_utils import LargeTableAdmin
from metrics.models import AnomalyKind


def secret_hint(secret: str) -> str:
    """Enough to tell two secrets apart, never the secret: its length and last two characters."""
    if not secret:
        return "(none)"
    return f"{len(secret)} characters, ending …{secret[-2:]}" if len(secret) >= 12 else f"{len(secret)} characters"


class AlertChannelForm(forms.ModelForm):
    # Subtle: the secret is never rendered back into the page; an empty field on edit keeps
    # the stored one.
    secret = forms.CharField(
        required=False,
        widget=forms.PasswordInput(render_value=False),
        help_text="Webhook: the HMAC-SHA256 key. Leave empty to keep the current one.",
    )
    events = forms.MultipleChoiceField(
        choices=AlertEventType.choices,
        required=False,
        widget=forms.CheckboxSelectMultiple,
        help_text="Only these events; none ticked: all.",
    )
    anomaly_kinds = forms.MultipleChoiceField(
        choices=AnomalyKind.choices,
        required=False,
        widget=forms.CheckboxSelectMultiple,
        help_text="Only episodes of these kinds; none ticked: all.",
    )

    class Meta:
        model = AlertChannel
        fields = ("name", "kind", "election", "enabled", "url", "secret", "recipients", "events", "anomaly_kinds")

    def clean_secret(self):
        secret = self.cleaned_data.get("secret") or ""
        return secret or (self.instance.secret if self.instance.pk else "")


@admin.register(AlertChannel)
class AlertChannelAdmin(admin.ModelAdmin):
    form = AlertChannelForm
    list_display = ("name", "kind", "election_code", "enabled", "target", "secret_display", "filters")
    list_filter = ("kind", "enabled")
    list_select_related = ("election",)
    search_fields = ("name", "url", "recipients")
    readonly_fields = ("secret_display",)
    fieldsets = (
        (None, {"fields": ("name", "kind", "election", "enabled")}),
        ("Webhook", {"fields": ("url", "secret", "secret_display")}),
        ("E-mail", {"fields": ("recipients",)}),
        ("Filters", {"fields": ("events", "anomaly_kinds")}),
    )

    @admin.display(description="election", ordering="election__code")
    def election_code(self, obj) -> str:
        return obj.election.code if obj.election_id else "(all elections)"

    @admin.display(description="sends to")
    def target(self, obj) -> str:
        return obj.url if obj.kind == "webhook" else ", ".join(obj.recipient_list)

    @admin.display(description="stored secret")
    def secret_display(self, obj) -> str:
        return secret_hint(obj.secret) if obj.kind == "webhook" else "-"

    @admin.display(description="filters")
    def filters(self, obj) -> str:
        parts = [", ".join(obj.events) or "all events", ", ".join(obj.anomaly_kinds) or "all kinds"]
        return "; ".join(parts)


class ReadOnlyAdmin(LargeTableAdmin):
    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False

    def get_ordering(self, request):
        return ("-id",)


@admin.register(AlertDelivery)
class AlertDeliveryAdmin(ReadOnlyAdmin):
    """What was sent where: a long list of pending rows means workers are behind or down."""

    list_display = (
        "id",
        "created_at",
        "status",
        "channel",
        "alert",
        "attempts",
        "last_error",
        "delivered_at",
        "uuid",
    )
    list_filter = ("status", "channel__kind", "channel")
    list_select_related = ("channel", "event__election", "event__constituency", "message__election")
    search_fields = ("uuid__exact",)
    sortable_by = ()

    @admin.display(description="alert")
    def alert(self, obj) -> str:
        if obj.event_id is not None:
            event = obj.event
            return f"{event.election.code} {event.constituency.code}: {event.kind} {event.event}"
        message = obj.message
        return f"{message.election.code if message.election_id else '(all)'}: {message.subject}"


@admin.register(AlertMessage)
class AlertMessageAdmin(ReadOnlyAdmin):
    list_display = ("id", "created_at", "election", "subject")
    list_select_related = ("election",)
    sortable_by = ()
