"""What a built-in model expects of its features, and the one-line error when they do not fit.

The pipeline's features reach a builder as `input_shape` (a shape, or a
dict of shapes for dict features). A mismatch is a config mistake, so the
error says what the model expects, what it got, and which step makes it.
"""

from __future__ import annotations


def describe(input_shape) -> str:
    """Features as a user reads them: `dict of 3 columns (a, b, c)` or `a tensor of shape [30]`."""
    if isinstance(input_shape, dict):
        names = sorted(input_shape)
        shown = ", ".join(names[:6]) + (", ..." if len(names) > 6 else "")
        return f"a dict of {len(names)} features ({shown})"
    return f"a tensor of shape {list(input_shape)}"


def expect_tensor(model: str, input_shape, ranks: tuple, expected: str, fix: str) -> None:
    """Raises ValueError unless the features are one tensor of one of `ranks` (per example).

    Args:
        model: the model's name, for the message.
        ranks: allowed ranks of one example's features.
        expected: what the model takes, in words.
        fix: the step that makes such features, in config form.
    """
    if isinstance(input_shape, dict) or len(input_shape) not in ranks:
        raise ValueError(f"model {model} expects {expected}, got {describe(input_shape)}; {fix}")


def output_units(num_classes: int) -> tuple[int, str | None]:
    """Units and activation of the output layer: a softmax over the classes, or for
    num_classes 0 (regression targets, model.loss mse/mae) one linear unit."""
    return (num_classes, "softmax") if num_classes else (1, None)
