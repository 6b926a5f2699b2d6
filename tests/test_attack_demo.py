"""`make attack-demo` runs end to end (here at a tiny size) and prints the clean-vs-attacked table."""

from monai_adv import attack_demo


def test_demo_prints_clean_and_attacked_accuracy(capsys):
    attack_demo.main(
        [
            "--n-per-class",
            "6",
            "--n-test-per-class",
            "3",
            "--image-size",
            "32",
            "--epochs",
            "1",
            "--threads",
            "1",
        ]
    )
    out = capsys.readouterr().out
    for row in ("clean", "FGSM (paper grid)", "PGD-20", "APGD-CE-20", "Square-200", "C&W-L2"):
        assert row in out
    clean_line = next(line for line in out.splitlines() if line.startswith("clean"))
    assert 0.0 <= float(clean_line.split()[-1]) <= 1.0
