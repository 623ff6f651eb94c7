"""Error types. Every user-facing error is a ValueError subclass that says what was wrong and
what is accepted, so callers can catch one type and show the message as it is."""


class InputError(ValueError):
    """Bad image, query, budget, policy or preset given by the caller."""


class CheckpointError(ValueError):
    """A checkpoint file is missing, truncated, or does not match the model it is loaded into."""


class InterfaceError(RuntimeError):
    """A stage produced a tensor that breaks the contract of the next stage (a bug, not bad input)."""


class NonFiniteLossError(RuntimeError):
    """Training produced a NaN/Inf loss; the message names the step and the component."""
