"""The committed Russian catalogue: compiled .mo in step with its .po, every message translated,
and no other catalogue shadowing its words."""

import gettext
from pathlib import Path

import polib
from django.utils import translation

LOCALE = Path(__file__).resolve().parent.parent / "locale" / "ru" / "LC_MESSAGES"


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
