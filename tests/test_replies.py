"""Inbound SMS classification: carrier keywords, crisis phrases, free-text opt-outs."""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from patient_drip.contacts.replies import (
    HELP_KEYWORDS,
    MAX_REPLY_CHARS,
    OPT_IN_KEYWORDS,
    OPT_OUT_KEYWORDS,
    Classification,
    PhraseLists,
    ReplyKind,
    classify_reply,
    load_phrase_lists,
    normalise,
)
from support.builders import ROOT

POLICY_DIR = ROOT / "policy"


def kind(body: str) -> ReplyKind:
    return classify_reply(body).kind


# --- carrier keywords ------------------------------------------------------------------------

KEYWORDS = [(k, ReplyKind.OPT_OUT) for k in sorted(OPT_OUT_KEYWORDS)]
KEYWORDS += [(k, ReplyKind.OPT_IN) for k in sorted(OPT_IN_KEYWORDS)]
KEYWORDS += [(k, ReplyKind.HELP) for k in sorted(HELP_KEYWORDS)]
SPELLINGS = [
    lambda k: k,
    str.upper,
    str.title,
    lambda k: k[0] + k[1:].upper(),  # sTOP
    lambda k: f"  {k.upper()} \n",
    lambda k: f"{k}.",
    lambda k: f"{k.title()}!",
    lambda k: f"{k.upper()}!!!",
    lambda k: f"\t{k}?\r\n",
    lambda k: f"'{k}'",
    lambda k: f"{k} 🙏",
    lambda k: "".join(chr(ord(c) - ord("a") + ord("Ａ")) for c in k),  # full-width letters (NFKC)
]


def test_keyword_sets_are_the_carrier_lists() -> None:
    assert OPT_OUT_KEYWORDS == {"stop", "stopall", "unsubscribe", "cancel", "end", "quit", "revoke", "optout"}
    assert OPT_IN_KEYWORDS == {"start", "unstop", "yes"}
    assert HELP_KEYWORDS == {"help", "info"}


@pytest.mark.parametrize("spell", SPELLINGS, ids=range(len(SPELLINGS)))
@pytest.mark.parametrize(("keyword", "expected"), KEYWORDS, ids=[k for k, _ in KEYWORDS])
def test_keyword_alone_in_any_case_and_punctuation_is_that_keyword(keyword, expected, spell) -> None:
    assert classify_reply(spell(keyword)) == Classification(expected, keyword)


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ("please stop", ReplyKind.OPT_OUT_TEXT),
        ("stop please", ReplyKind.OPT_OUT_TEXT),
        ("STOP ALL", ReplyKind.OPT_OUT_TEXT),
        ("I need to cancel my appointment", ReplyKind.OTHER),
        ("Yes please, book me in", ReplyKind.OTHER),
        ("yes yes", ReplyKind.OTHER),
        ("help me choose a time", ReplyKind.OTHER),
        ("Can I get more info on prices?", ReplyKind.OTHER),
        ("When can I start?", ReplyKind.OTHER),
        ("the end of the week works", ReplyKind.OTHER),
        ("quit smoking last year, does that matter?", ReplyKind.OTHER),
        ("s t o p", ReplyKind.OTHER),
    ],
)
def test_keyword_inside_a_longer_message_is_not_a_keyword(body, expected) -> None:
    assert kind(body) is expected


@pytest.mark.parametrize("body", ["STOPPP", "stoppp!!", "Stooop"])
def test_stretched_stop_is_a_free_text_opt_out(body) -> None:
    assert classify_reply(body) == Classification(ReplyKind.OPT_OUT_TEXT, "stop")


# --- crisis ----------------------------------------------------------------------------------

CRISIS = [
    "I want to die",
    "i just want to die",
    "I really want to fucking die",
    "i wanna die",
    "want 2 die tbh",
    "thinking about killing myself",
    "I'm going to kill myself tonight",
    "i almost killed myself last year",
    "kil myself",
    "kms",
    "honestly kms",
    "i cant go on anymore",
    "I can’t go on like this",
    "I can't go on. Tuesday was the last straw",  # an exclusion never crosses a sentence end
    "I'm going to end it all",
    "thinking of ending it all",
    "I want to end my life",
    "I'm going to take my own life",
    "I took an overdose last night",
    "thinking about overdosing",
    "I cut myself again",
    "been cutting myself",
    "I have no reason to live",
    "everyone would be better off dead. me first",
    "they'd be better off without me",
    "I'm a burden to everyone",
    "I wish I was dead",
    "wish i were dead",
    "I wish I'd never been born",
    "I don't want to live anymore",
    "dont want to be here anymore",
    "I hope I don't wake up tomorrow",
    "there's no point in living",
    "life isn't worth living",
    "i'm suicidal",
    "is it safe if I have had suicidal thoughts in the past?",  # flagged on purpose: staff should see it
    "I tried suicide before, will that rule me out?",
    "having sucidal thoughts",
    "i want to unalive myself",
    "I've been self-harming",
    "i've been thinking about hurting myself",
    "I have a bottle of pills right here",
    "took too many pills",
    "I'm going to jump off a bridge",
    "this is goodbye",
    "I don't feel safe right now",
    "I am in danger",
    "i want to dieeee",
    "I WANT TO DIE 😭😭😭",
    "i  want   to\ndie",
    "I cut myself shaving, and honestly I want to die",  # the exclusion hides only its own words
    "stop texting me, I want to die",  # crisis beats an opt-out
    "help me i want to kill myself",  # crisis beats HELP in a sentence
    "no quiero vivir",
    "me quiero morir",
]


@pytest.mark.parametrize("body", CRISIS)
def test_crisis_message_is_flagged(body) -> None:
    result = classify_reply(body)
    assert result.kind is ReplyKind.CRISIS
    assert result.matched


LOOK_ALIKES = [
    "this traffic is killing me",
    "my feet are killing me after work",
    "the suspense is killing me, when do I hear back?",
    "I'm dying to know the price",
    "dying to try this",
    "my phone died, sorry for the late reply",
    "My battery is dead, call me tomorrow",
    "my car died on the highway",
    "kill two birds with one stone: can I book for my sister too?",
    "I'd die for a good night's sleep lol",  # idiom: "would die for" = "would really like"
    "That joke killed me 😂",
    "I nearly died laughing",
    "I'm dead tired after the drive",
    "I could kill for a coffee",
    "should i die my hair before the appointment?",
    "I can't go on Tuesday, can we do Wednesday?",
    "I can’t go on Friday",
    "I cut myself shaving this morning, is that ok?",
    "I hurt myself at the gym, can I still come in?",
    "I burned myself on the stove lol",
    "I live about 30 kms away, is there parking?",
    "I think I OD'd on coffee today haha",
    "I overdosed on caffeine this morning",
    "I live right in front of a train station",
    "I don't feel safe driving after the treatment, can someone pick me up?",
    "how do I stop my current meds?",
    "I overdid it at the gym",
    "we killed it at the game last night",
    "my plants are dying",
    "Is the treatment safe?",
]


@pytest.mark.parametrize("body", LOOK_ALIKES)
def test_look_alike_is_not_a_crisis(body) -> None:
    assert kind(body) is not ReplyKind.CRISIS


def _example_from_pattern(line: str) -> str:
    """The plainest message a pattern line should match: wildcards and gaps dropped."""
    words = [w for w in line.split() if w != "..."]
    return " ".join("5" if w == "<number>" else w.rstrip("*") for w in words)


def _lines(name: str) -> list[str]:
    text = (POLICY_DIR / name).read_text(encoding="utf-8")
    return [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]


@pytest.mark.parametrize("line", _lines("crisis_phrases.txt"))
def test_every_crisis_pattern_flags_its_own_plain_example(line) -> None:
    assert kind(_example_from_pattern(line)) is ReplyKind.CRISIS


@pytest.mark.parametrize("line", _lines("crisis_exclusions.txt"))
def test_every_crisis_exclusion_is_needed_and_works(line) -> None:
    example = _example_from_pattern(line)
    phrases = load_phrase_lists()
    without = PhraseLists(phrases.crisis, (), phrases.optout, phrases.optout_exclusions)
    assert classify_reply(example, without).kind is ReplyKind.CRISIS, "no crisis line catches it: drop it"
    assert classify_reply(example).kind is not ReplyKind.CRISIS


def test_crisis_list_is_large_enough_and_documented() -> None:
    phrases = load_phrase_lists()
    assert len(phrases.crisis) >= 60
    for name in ("crisis_phrases.txt", "crisis_exclusions.txt", "optout_phrases.txt", "optout_exclusions.txt"):
        header = (POLICY_DIR / name).read_text(encoding="utf-8").split("\n\n")[0]
        assert header.startswith("#") and len(header.splitlines()) >= 8, f"{name} needs its header"
    crisis_header = (POLICY_DIR / "crisis_phrases.txt").read_text(encoding="utf-8")
    for source in ("Columbia", "988"):
        assert source in crisis_header


# --- free-text opt-outs ----------------------------------------------------------------------

OPT_OUTS = [
    "stop texting me",
    "Please stop texting me.",
    "remove me",
    "Remove me from this list",
    "unsubscribe me please",
    "please stop",
    "PLEASE STOP!!",
    "take me off your list",
    "don't text me again",
    "Do not contact me",
    "no more texts",
    "No more messages please",
    "leave me alone",
    "stop sending me these",
    "Stop messaging me",
    "opt me out",
    "Opt-out",
    "lose my number",
    "wrong number",
    "not interested",
    "Don't. Stop texting me.",  # an exclusion never crosses a sentence end
    "don't stop... actually no, remove me",
    "I revoke my consent to receive texts",
]


@pytest.mark.parametrize("body", OPT_OUTS)
def test_free_text_opt_out(body) -> None:
    result = classify_reply(body)
    assert result.kind is ReplyKind.OPT_OUT_TEXT
    assert result.matched


NOT_OPT_OUTS = [
    "don't stop",  # the opposite of an opt-out
    "please don't stop sending these, they help",
    "I can't stop thinking about booking",  # "stop" inside a sentence
    "how do I stop my current meds?",  # a question for the clinician
    "Should I stop taking my medication before the appointment?",
    "Can I stop by the clinic tomorrow?",
    "I need to cancel my appointment",  # CANCEL is a keyword only alone
    "what's the end date of the program?",
    "Is there parking near the bus stop?",
    "I don't text much, can you call me?",
    "Thanks, this was helpful",
]


@pytest.mark.parametrize("body", NOT_OPT_OUTS)
def test_not_an_opt_out(body) -> None:
    assert kind(body) is ReplyKind.OTHER


def test_take_me_off_the_waitlist_counts_as_opt_out_because_missing_one_is_worse() -> None:
    # Documented trade-off (optout_phrases.txt): a wrong opt-out is visible to staff and undone;
    # a missed one means texting someone who asked us to stop.
    assert kind("Can you take me off the waitlist and book me for Friday?") is ReplyKind.OPT_OUT_TEXT


# --- normalisation, limits, data files -------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("I CAN’T go on", "i cant go on"),
        ("don't", "dont"),
        ("Ｉ’ｍ ｆｉｎｅ", "im fine"),
        ("self-harm…", "self harm"),
        ("café crème", "cafe creme"),
        ("  lots   of\n\nspace ", "lots of space"),
        ("emoji 😭 between", "emoji between"),
        ("nooooo waaaay", "no way"),
        ("call 911", "call 911"),
    ],
)
def test_normalise(raw, expected) -> None:
    assert normalise(raw) == expected


def test_only_the_first_max_reply_chars_are_read() -> None:
    near_end = "x" * (MAX_REPLY_CHARS - 20) + " I want to die"
    assert kind(near_end) is ReplyKind.CRISIS
    past_end = "x" * MAX_REPLY_CHARS + " I want to die"  # longer than any SMS can be (1,600)
    assert kind(past_end) is ReplyKind.OTHER


def test_huge_input_is_classified_quickly() -> None:
    started = time.perf_counter()
    for body in ("a" * 1_000_000, "want to " * 200_000, "ﷺ" * 100_000, "!" * 500_000 + "stop"):
        assert isinstance(classify_reply(body).kind, ReplyKind)
    assert time.perf_counter() - started < 2.0


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=3000))
def test_classify_never_raises_and_returns_a_kind(body) -> None:
    result = classify_reply(body)
    assert isinstance(result.kind, ReplyKind)
    assert (result.matched is None) == (result.kind is ReplyKind.OTHER)


WORDS = ["i", "want", "to", "die", "stop", "kill", "myself", "cant", "go", "on", "tuesday", "dont", "please", "me",
         "remove", "kms", "5", "...", "!", "’", "😭", "\n", "end", "it", "all", "help"]


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(WORDS), max_size=40).map(" ".join))
def test_a_crisis_sentence_is_flagged_whatever_comes_before_it(prefix) -> None:
    assert kind(prefix + ". I want to kill myself") is ReplyKind.CRISIS


def test_phrase_lists_are_cached_per_directory() -> None:
    assert load_phrase_lists() is load_phrase_lists(POLICY_DIR)


def _policy_copy(tmp_path: Path, **overrides: str) -> Path:
    for name in ("crisis_phrases.txt", "crisis_exclusions.txt", "optout_phrases.txt", "optout_exclusions.txt"):
        (tmp_path / name).write_text(overrides.get(name.replace(".txt", ""), "# empty\n"), encoding="utf-8")
    return tmp_path


def test_custom_phrase_files_use_the_documented_syntax(tmp_path) -> None:
    phrases = load_phrase_lists(
        _policy_copy(
            tmp_path,
            crisis_phrases="# header\nfeel* ... hopeless\n",
            crisis_exclusions="feel* ... hopeless about <number> things\n",
        )
    )
    assert classify_reply("I feel so very hopeless", phrases) == Classification(ReplyKind.CRISIS, "feel* ... hopeless")
    assert classify_reply("feeling hopeless", phrases).kind is ReplyKind.CRISIS
    assert classify_reply("I feel a bit too much hopeless", phrases).kind is ReplyKind.OTHER  # gap is 2 words
    assert classify_reply("feeling hopeless about 2 things", phrases).kind is ReplyKind.OTHER
    assert classify_reply("stop", phrases).kind is ReplyKind.OPT_OUT  # keywords need no file


@pytest.mark.parametrize(
    ("line", "problem"),
    [
        ("want to ... ", "'...' must stand between two words"),
        ("... die", "'...' must stand between two words"),
        ("kill my*self", "not a word"),
        ("want to die  # comment", "comments must be on a line of their own"),
        ("***", "not a word"),
    ],
)
def test_malformed_pattern_names_file_and_line(tmp_path, line, problem) -> None:
    _policy_copy(tmp_path, crisis_phrases=f"# header\n\n{line}\n")
    with pytest.raises(ValueError, match=re.escape("crisis_phrases.txt:3: ") + ".*" + re.escape(problem)):
        load_phrase_lists(tmp_path)


def test_missing_phrase_file_is_named(tmp_path) -> None:
    with pytest.raises(ValueError, match="crisis_phrases.txt: phrase file not found"):
        load_phrase_lists(tmp_path)
