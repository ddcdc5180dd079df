"""The spec and the code agree: the worked example, the limits table, the error categories."""

import importlib.util
import re
import sys
from pathlib import Path

from icqcodec import constants, errors

SPEC = Path(__file__).resolve().parent.parent / "spec"


def test_worked_examples_are_current():
    spec = importlib.util.spec_from_file_location("make_worked_example", SPEC / "make_worked_example.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    assert sorted(module.EXAMPLES) == ["worked-example-2.md", "worked-example.md"]
    for page, example in module.EXAMPLES.items():
        assert (SPEC / page).read_text() == module.render(example()), page


def test_limits_table_matches_constants():
    text = (SPEC / "icq-format.md").read_text()
    table = text[text.index("### 4.5 Limits") : text.index("### 4.6")]
    expected = {
        "`directory_size`": constants.MAX_DIRECTORY_SIZE,
        "`tensor_count`": constants.MAX_TENSORS,
        "`metadata_count`": constants.MAX_METADATA,
        "`feature_count`": constants.MAX_FEATURES,
        "`rank`": constants.MAX_RANK,
        "`data_size`": constants.MAX_DATA_SIZE,
    }
    for field, value in expected.items():
        row = next(line for line in table.splitlines() if line.startswith(f"| {field}"))
        number = re.search(r"at most (2\^(\d+)|(\d+))", row)
        stated = 1 << int(number.group(2)) if number.group(2) else int(number.group(3))
        assert stated == value, row


def test_every_error_category_is_specified():
    text = (SPEC / "icq-format.md").read_text()
    section = text[text.index("### 9.1") : text.index("### 9.2")]
    for category in errors.ERROR_CLASSES:
        assert f"| `{category}` |" in section
