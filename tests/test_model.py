"""Parsing the original scripts' task format: inline tags anywhere, options winning, clear errors."""

import pytest

from dorch.model import THINKING_LEVELS, TaskError, TaskSpec, parse_task, resolve_model


def test_tags_anywhere_are_removed_and_applied() -> None:
    spec = parse_task("Write a sort function [model:gpt-4o] [thinking:medium]")
    assert spec == TaskSpec("Write a sort function", "gpt-4o", "medium")
    spec = parse_task("[thinking:high] Explain [model:openai/o3] monads")
    assert spec == TaskSpec("Explain monads", "openai/o3", "high")


def test_options_win_over_tags() -> None:
    spec = parse_task("do it [model:a] [thinking:low]", model="b", thinking="max")
    assert (spec.model, spec.thinking) == ("b", "max")


def test_text_is_kept_exactly() -> None:
    text = "Line one ünïcødé 🚀\n\n```python\nx = a[1:2]\n```\n\ttabbed `[foo:bar]` end\n"
    assert parse_task(text).prompt == text


def test_code_and_subscripts_are_not_tags() -> None:
    assert parse_task("fix arr[i:j] and d[key:val]").prompt == "fix arr[i:j] and d[key:val]"
    assert parse_task("```\n[foo:bar]\n```").prompt == "```\n[foo:bar]\n```"


@pytest.mark.parametrize("level", THINKING_LEVELS)
def test_every_thinking_level_is_accepted(level: str) -> None:
    assert parse_task(f"x [thinking:{level.upper()}]").thinking == level


def test_unknown_tag_lists_the_valid_tags() -> None:
    with pytest.raises(TaskError, match=r"unknown tag \[foo:bar\].*\[model:\.\.\.\], \[thinking"):
        parse_task("hello [foo:bar]")


def test_unknown_thinking_level_lists_levels() -> None:
    with pytest.raises(TaskError, match=r"unknown thinking level 'huge'.*minimal, low, medium"):
        parse_task("hello [thinking:huge]")


def test_conflicting_duplicate_tags_rejected_identical_ones_fine() -> None:
    with pytest.raises(TaskError, match="conflicting tags"):
        parse_task("[model:a] hi [model:b]")
    assert parse_task("[model:a] hi [model:a]").model == "a"


@pytest.mark.parametrize("text", ["", "   ", "\n\t", "[model:x]", "[model:x] [thinking:low]  "])
def test_empty_prompt_rejected(text: str) -> None:
    with pytest.raises(TaskError, match="prompt is empty"):
        parse_task(text)


def test_bad_model_name_rejected() -> None:
    with pytest.raises(TaskError, match="invalid model name"):
        parse_task("hi", model="rm -rf /")


def test_to_text_round_trips() -> None:
    specs = [TaskSpec("a\nb", "m", "low"), TaskSpec("plain"), TaskSpec("code `x`", None, "off")]
    for spec in specs:
        assert parse_task(spec.to_text()) == spec


def test_aliases_resolve() -> None:
    aliases = {"cheap": "openrouter/tiny"}
    assert resolve_model("cheap", aliases) == "openrouter/tiny"
    assert resolve_model("openai/gpt-4o", aliases) == "openai/gpt-4o"
    assert resolve_model(None, aliases) is None
