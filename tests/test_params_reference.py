"""docs/params.md is the params reference generated from the pydantic models, and stays current."""

from pathlib import Path

from pydantic import Field

from mim.params.base import Strict
from mim.params.reference import REGENERATE, _model_tables, params_reference

DOC = Path(__file__).resolve().parents[1] / "docs" / "params.md"


def test_docs_params_md_is_current():
    assert DOC.read_text(encoding="utf-8") == params_reference(), f"docs/params.md is stale: run `{REGENERATE}`"


def test_reference_lists_every_file_field_and_union_choice():
    text = params_reference()
    for heading in ("## data.yaml", "## <recipe>.yaml", "## eval.yaml", "## transfer.yaml", "## tokenizer.yaml",
                    "## teacher.yaml", "## diversity.yaml"):
        assert heading in text
    for choice in ("mae", "simmim", "ccvit", "img2vec", "cim", "mixmim", "dmjd"):
        assert f"#### `method.name: {choice}`" in text
    for arch in ("vit", "cnn", "hier"):
        assert f"#### `model.arch: {arch}`" in text
    # nested models flattened to dotted keys, with type, default and description
    assert "| `augment.scale` | [0 < float <= 1, 0 < float <= 1] | `[0.35, 1.0]` |" in text
    assert "| `method.generator.lr_scale` | float > 0 | `1.0` | the generator's lr" in text
    assert '| `train.resume` | "auto" \\| "never" \\| "force" | `"auto"` | auto: continue' in text
    assert "| `models` | map string -> `DiversityModel` (below) | required |" in text


def test_a_new_field_shows_up():
    """Control: the generator reads the models, so a field added to a model appears in its table."""

    class Probe(Strict):
        width: int = Field(3, gt=0, description="a probe field")
        mode: str | None = None

    table = "\n".join(_model_tables(Probe, "probe.", "probe.yaml"))
    assert "| `probe.width` | int > 0 | `3` | a probe field |" in table
    assert "| `probe.mode` | string \\| null | `null` |  |" in table


def test_cli_prints_the_reference(capsys):
    from mim.cli.main import main

    assert main(["params", "reference"]) == 0
    assert capsys.readouterr().out == params_reference()
