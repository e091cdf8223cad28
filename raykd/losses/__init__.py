"""Pure loss functions: tensors in, scalar (batch-mean) tensor out, no state or config."""

from raykd.losses.kd import kd_loss

__all__ = ["kd_loss"]
