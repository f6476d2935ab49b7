"""The digits cut small and in float64, for the tests that compare training runs to tight tolerances."""

import dataclasses

from ppl_vae.data import Dataset


def float64_digits(digits: Dataset, train: int, test: int) -> Dataset:
    """The first ``train`` training and ``test`` test digits of ``digits``, images in float64, labels as they are."""
    return dataclasses.replace(
        digits,
        x_train=digits.x_train[:train].double(),
        y_train=digits.y_train[:train],
        x_test=digits.x_test[:test].double(),
        y_test=digits.y_test[:test],
    )
