from vrpsam.cli.main import main


def test_lists_registry_and_where_files_are(shared, monkeypatch, capsys):
    folder = shared("assets/weights/mobilenet_v2")
    monkeypatch.setenv("VRPSAM_WEIGHTS", str(folder))
    assert main(["weights"]) == 0
    out = capsys.readouterr().out
    assert "sam_vit_b" in out and "would download to" in out
    assert str(folder / "mobilenet_v2_1.0_224_quant.tflite") in out


def test_verify_good_and_unknown_file(shared, tmp_path, capsys):
    good = shared("assets/weights/mobilenet_v2/mobilenet_v2_1.0_224_quant.tflite")
    assert main(["weights", "--verify", str(good)]) == 0
    assert "OK" in capsys.readouterr().out
    stray = tmp_path / "stray.bin"
    stray.write_bytes(b"x")
    assert main(["weights", "--verify", str(stray)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "stray.bin" in err and "Traceback" not in err


def test_unknown_command_is_one_line_exit_2(capsys):
    assert main(["frobnicate"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and err.count("\n") == 1
