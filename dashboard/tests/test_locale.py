"""The committed Russian catalogue: compiled .mo in step with its .po, every message translated,
and the layers above and below the dashboard kept apart."""

import gettext
import re
from pathlib import Path

import polib
from django.utils import translation

LOCALE = Path(__file__).resolve().parent.parent / "locale" / "ru" / "LC_MESSAGES"
ROOT = Path(__file__).resolve().parents[2]


def test_every_message_is_translated_and_the_compiled_catalogue_matches_the_po():
    po = polib.pofile(str(LOCALE / "django.po"))
    assert po.percent_translated() == 100
    assert not [entry.msgid for entry in po.fuzzy_entries()]
    with open(LOCALE / "django.mo", "rb") as compiled:
        catalogue = gettext.GNUTranslations(compiled)
    for entry in po.translated_entries():
        assert catalogue.gettext(entry.msgid) == entry.msgstr, entry.msgid


def test_no_other_catalogue_shadows_the_dashboards_words():
    po = polib.pofile(str(LOCALE / "django.po"))
    with translation.override("ru"):
        shadowed = [e.msgid for e in po.translated_entries() if translation.gettext(e.msgid) != e.msgstr]
    assert shadowed == []


def test_nothing_below_the_dashboard_imports_it():
    importer = re.compile(r"^\s*(from|import)\s+dashboard\b", re.M)
    offenders = [
        str(path.relative_to(ROOT))
        for app in ("election_monitor", "elections", "metrics")
        for path in (ROOT / app).rglob("*.py")
        if importer.search(path.read_text())
    ]
    assert offenders == []
