from conftest import cli


def test_help_lists_commands():
    code, out, _ = cli("--help")
    assert code == 0
    for cmd in ("constitution", "generate", "reproduce"):
        assert cmd in out


def test_generate_tiny_random_is_seeded():
    args = ("generate", "--model", "tiny-random", "--prompt", "Hello", "--max-new-tokens", "6", "--seed", "4")
    a, b = cli(*args), cli(*args)
    assert a[0] == 0 and a[1] == b[1] and a[1].strip()


def test_generate_unknown_model_exits_2():
    code, _, err = cli("generate", "--model", "./no/such/model", "--prompt", "x")
    assert code == 2 and "no such directory" in err


def test_reproduce_bad_profile_exits_2():
    code, _, err = cli("reproduce", "--profile", "no-such-profile")
    assert code == 2 and "no such profile" in err
