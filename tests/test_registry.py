"""tff_byz.registry: spec parsing, typed parameters, resolution, messages (a local registry)."""

import collections
import math
import re

import pytest

from tff_byz.registry import (Entry, Param, Reference, Registry, Resolved, SpecError,
                              at_least_one, in_unit_interval, non_negative, parse_spec, positive)


def _build(**params):
    return params


ALPHA = Entry(
    name="alpha", build=_build, kind="rule", help="first help", aliases=("a",),
    params={
        "x": Param(float, 1.0, "step", check=positive),
        "n": Param(int, None, "count", check=at_least_one),
        "mode": Param(str, "fast", "speed", choices=("fast", "slow")),
        "flag": Param(bool, False, "toggle"),
    })
BETA = Entry(name="beta", build=_build, help="second help")


@pytest.fixture
def registry():
    reg = Registry("--thing")
    reg.register(ALPHA)
    reg.register(BETA)
    return reg


def _error(registry, spec) -> str:
    with pytest.raises(SpecError) as info:
        registry.resolve(spec)
    return str(info.value)


# ---------------------------------------------------------------- parse_spec

def test_parse_spec_names_and_params():
    assert parse_spec("a") == [("a", {})]
    assert parse_spec("a:k=v,k2=v2+b") == [("a", {"k": "v", "k2": "v2"}), ("b", {})]
    assert parse_spec(" a : k = v , k2=v2 + b ") == [("a", {"k": "v", "k2": "v2"}), ("b", {})]
    assert parse_spec("a:k=1,,k2=2,") == [("a", {"k": "1", "k2": "2"})]  # empty items skipped
    assert parse_spec("a:") == [("a", {})]


def test_parse_spec_keeps_parameter_order():
    (_, params), = parse_spec("a:z=1,y=2,x=3")
    assert list(params) == ["z", "y", "x"]


def test_parse_spec_value_keeps_everything_after_the_first_equals():
    assert parse_spec("a:k=x=y") == [("a", {"k": "x=y"})]


@pytest.mark.parametrize("spec,expected", [
    ("a:x=1e+16+b", [("a", {"x": "1e+16"}), ("b", {})]),
    ("a:x=1E+16+b", [("a", {"x": "1E+16"}), ("b", {})]),
    ("a:x=2.5e+3,y=1+b:z=4", [("a", {"x": "2.5e+3", "y": "1"}), ("b", {"z": "4"})]),
    ("a:x=2.e+3", [("a", {"x": "2.e+3"})]),
    ("a:x=+3", [("a", {"x": "+3"})]),
    ("a:x=+3+b:y=+1e+2", [("a", {"x": "+3"}), ("b", {"y": "+1e+2"})]),
    ("a:x=-1e+5", [("a", {"x": "-1e+5"})]),
    ("a:x=1e-3+b", [("a", {"x": "1e-3"}), ("b", {})]),
    ("a:x=3+b", [("a", {"x": "3"}), ("b", {})]),
    ("a:mode=slope+b", [("a", {"mode": "slope"}), ("b", {})]),  # 'e' after a letter: a join
    ("a+b+c", [("a", {}), ("b", {}), ("c", {})]),
    ("a: + b", [("a", {}), ("b", {})]),
])
def test_parse_spec_plus_is_a_join_except_as_a_sign(spec, expected):
    assert parse_spec(spec) == expected


@pytest.mark.parametrize("spec,message", [
    ("a++b", "empty component"),
    ("a+", "empty component"),
    ("+a", "empty component"),
    ("a:x=1,x=2", "parameter 'x' given twice"),
    ("a:x=1, x =2", "parameter 'x' given twice"),
    ("a:x", "expected key=value, got 'x'"),
    ("a:=3", "expected key=value, got '=3'"),
    ("a:x=1,y", "expected key=value, got 'y'"),
])
def test_parse_spec_errors(spec, message):
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        parse_spec(spec)


# ---------------------------------------------------------------- Param.convert

@pytest.mark.parametrize("raw,value", [
    ("true", True), ("True", True), (" YES ", True), ("1", True),
    ("false", False), ("FALSE", False), ("no", False), ("0", False),
])
def test_bool_convert(raw, value):
    assert Param(bool, False).convert(raw) is value


@pytest.mark.parametrize("raw", ["maybe", "", "2", "t", "on"])
def test_bool_convert_rejects(raw):
    with pytest.raises(ValueError, match="^expected true or false$"):
        Param(bool, False).convert(raw)


def test_int_convert():
    assert Param(int, 0).convert("3") == 3
    assert type(Param(int, 0).convert("3")) is int
    assert Param(int, 0).convert("+3") == 3
    assert Param(int, 0).convert("-4") == -4
    for raw in ("3.0", "2.5", "1e3", "x", ""):
        with pytest.raises(ValueError):
            Param(int, 0).convert(raw)


def test_float_convert():
    assert Param(float, 0.0).convert("2") == 2.0
    assert type(Param(float, 0.0).convert("2")) is float
    assert Param(float, 0.0).convert("1e+16") == 1e16
    assert Param(float, 0.0).convert("+3") == 3.0
    assert Param(float, 0.0).convert("-0.25") == -0.25
    assert math.isinf(Param(float, 0.0).convert("inf"))
    with pytest.raises(ValueError):
        Param(float, 0.0).convert("abc")


def test_str_convert_is_the_raw_string():
    assert Param(str, "").convert("Some Value") == "Some Value"


# ---------------------------------------------------------------- checks

@pytest.mark.parametrize("check,good,bad,message", [
    (non_negative, [0, 0.0, 1e-12, 5, math.inf], [-1, -1e-12, math.nan], "must be >= 0"),
    (positive, [1e-12, 1, math.inf], [0, 0.0, -1, math.nan], "must be > 0"),
    (at_least_one, [1, 1.0, 2, 100], [0, 0.999, -1, math.nan], "must be >= 1"),
    (in_unit_interval, [1e-12, 0.5, 1, 1.0], [0, 0.0, -0.1, 1.0000001, 2, math.nan],
     "must be in (0, 1]"),
])
def test_checks(check, good, bad, message):
    for value in good:
        assert check(value) is None, value
    for value in bad:
        assert check(value) == message, value


# ---------------------------------------------------------------- Registry.resolve

def test_resolve_fills_defaults_in_declared_order(registry):
    (resolved,) = registry.resolve("alpha")
    assert resolved.name == "alpha"
    assert resolved.entry is ALPHA
    assert list(resolved.params.items()) == [("x", 1.0), ("n", None), ("mode", "fast"),
                                             ("flag", False)]


def test_resolve_converts_and_orders_given_params(registry):
    (resolved,) = registry.resolve("alpha:flag=yes,n=3,x=2")
    assert list(resolved.params.items()) == [("x", 2.0), ("n", 3), ("mode", "fast"),
                                             ("flag", True)]
    assert type(resolved.params["x"]) is float
    assert type(resolved.params["n"]) is int


def test_resolve_exponent_and_sign(registry):
    first, second = registry.resolve("alpha:x=1e+16+beta")
    assert first.params["x"] == 1e16
    assert second.name == "beta"
    (only,) = registry.resolve("alpha:x=+3")
    assert only.params["x"] == 3.0


def test_resolve_chain(registry):
    resolved = registry.resolve("beta+alpha:mode=slow+beta")
    assert [r.name for r in resolved] == ["beta", "alpha", "beta"]
    assert resolved[1].params["mode"] == "slow"
    assert resolved[0].params == {}


def test_resolve_alias(registry):
    (resolved,) = registry.resolve("a:n=2")
    assert resolved.name == "alpha"
    assert resolved.entry is ALPHA
    assert resolved.params["n"] == 2
    assert resolved.canonical == "alpha:x=1.0,n=2,mode=fast,flag=false"


@pytest.mark.parametrize("spec,message", [
    ("", "--thing: empty value; valid choices: alpha, beta."),
    ("   ", "--thing: empty value; valid choices: alpha, beta."),
    (None, "--thing: empty value; valid choices: alpha, beta."),
    ("gamma", "--thing: unknown name 'gamma'; valid choices: alpha, beta."),
    ("beta+gamma:x=1", "--thing: unknown name 'gamma'; valid choices: alpha, beta."),
    ("alpha:z=1", "--thing: alpha has no parameter 'z'; valid parameters: x, n, mode, flag."),
    ("a:z=1", "--thing: alpha has no parameter 'z'; valid parameters: x, n, mode, flag."),
    ("beta:z=1", "--thing: beta has no parameter 'z'; valid parameters: none."),
    ("alpha:x=abc", "--thing: alpha:x='abc' is not a valid float."),
    ("alpha:n=2.5", "--thing: alpha:n='2.5' is not a valid int."),
    ("alpha:flag=maybe", "--thing: alpha:flag='maybe' is not a valid bool."),
    ("alpha:mode=medium", "--thing: alpha:mode='medium' is not one of fast, slow."),
    ("alpha:x=0", "--thing: alpha:x=0.0 is invalid: must be > 0."),
    ("alpha:x=-1e+2", "--thing: alpha:x=-100.0 is invalid: must be > 0."),
    ("alpha:n=0", "--thing: alpha:n=0 is invalid: must be >= 1."),
    ("alpha:x=1,x=2",
     "--thing='alpha:x=1,x=2': parameter 'x' given twice; expected NAME[:key=value,...]."),
    ("alpha+", "--thing='alpha+': empty component; expected NAME[:key=value,...]."),
    ("alpha:x", "--thing='alpha:x': expected key=value, got 'x'; expected NAME[:key=value,...]."),
])
def test_resolve_errors(registry, spec, message):
    assert _error(registry, spec) == message


def test_spec_error_is_a_value_error():
    assert issubclass(SpecError, ValueError)


def test_resolve_checks_defaults_too():
    reg = Registry("--f")
    reg.register(Entry("bad", _build, params={"x": Param(float, -1.0, check=positive),
                                              "m": Param(str, "z", choices=("a", "b"))}))
    assert _error(reg, "bad:m=a") == "--f: bad:x=-1.0 is invalid: must be > 0."
    assert _error(reg, "bad:x=1") == "--f: bad:m='z' is not one of a, b."
    (ok,) = reg.resolve("bad:x=1,m=b")
    assert dict(ok.params) == {"x": 1.0, "m": "b"}


def test_none_default_skips_check(registry):
    (resolved,) = registry.resolve("alpha")
    assert resolved.params["n"] is None  # at_least_one(None) would raise TypeError


# ---------------------------------------------------------------- canonical / compact

def test_canonical_and_compact(registry):
    (default,) = registry.resolve("alpha")
    assert default.canonical == "alpha:x=1.0,mode=fast,flag=false"  # None (auto) omitted
    assert default.compact == "alpha"
    (changed,) = registry.resolve("alpha:flag=true,x=2.5,mode=fast")
    assert changed.canonical == "alpha:x=2.5,mode=fast,flag=true"
    assert changed.compact == "alpha:x=2.5,flag=true"
    (auto,) = registry.resolve("alpha:n=4")
    assert auto.compact == "alpha:n=4"
    (big,) = registry.resolve("alpha:x=1e+16")
    assert big.canonical == "alpha:x=1e+16,mode=fast,flag=false"
    (beta,) = registry.resolve("beta")
    assert beta.canonical == beta.compact == "beta"


def test_compact_compares_values_not_spelling(registry):
    (resolved,) = registry.resolve("alpha:x=1,flag=no,mode=fast")
    assert resolved.compact == "alpha"


@pytest.mark.parametrize("spec", ["alpha", "alpha:x=1e+16+beta", "a:n=3,flag=1,x=0.125",
                                  "beta+alpha:mode=slow", "alpha:x=+3"])
def test_canonical_round_trips(registry, spec):
    resolved = registry.resolve(spec)
    canonical = "+".join(r.canonical for r in resolved)
    again = registry.resolve(canonical)
    assert [(r.name, dict(r.params)) for r in again] == [(r.name, dict(r.params)) for r in resolved]
    assert "+".join(r.canonical for r in again) == canonical
    compact = "+".join(r.compact for r in resolved)
    assert [dict(r.params) for r in registry.resolve(compact)] == [dict(r.params) for r in resolved]


def test_resolved_built_directly():
    resolved = Resolved(ALPHA, {"x": 1.0, "n": None, "mode": "slow", "flag": True})
    assert resolved.canonical == "alpha:x=1.0,mode=slow,flag=true"
    assert resolved.compact == "alpha:mode=slow,flag=true"


# ---------------------------------------------------------------- register / entry / names

def test_names_contains_entry(registry):
    assert registry.names == ["alpha", "beta"]  # aliases are not names
    assert "alpha" in registry and "a" in registry and "beta" in registry
    assert "gamma" not in registry and "b" not in registry
    assert registry.entry("a") is ALPHA
    assert registry.entry("alpha") is ALPHA
    with pytest.raises(SpecError, match=re.escape("--thing: unknown name 'gamma'; valid choices: "
                                                  "alpha, beta.")):
        registry.entry("gamma")


def test_register_returns_the_entry():
    reg = Registry("--r")
    assert reg.register(BETA) is BETA


@pytest.mark.parametrize("entry,name", [
    (Entry("alpha", _build), "alpha"),  # a name again
    (Entry("a", _build), "a"),  # an alias as a name
    (Entry("gamma", _build, aliases=("beta",)), "beta"),  # a name as an alias
    (Entry("gamma", _build, aliases=("g", "a")), "a"),  # an alias as an alias
])
def test_register_twice_raises_and_changes_nothing(registry, entry, name):
    with pytest.raises(ValueError, match=f"^--thing: '{name}' registered twice$"):
        registry.register(entry)
    assert registry.names == ["alpha", "beta"]
    assert "gamma" not in registry and "g" not in registry
    assert registry.entry("a") is ALPHA


def test_describe(registry):
    assert registry.describe() == (
        "alpha (alias: a) [rule]: first help\n"
        "    x (float; default 1.0): step\n"
        "    n (int; default auto): count\n"
        "    mode (str; one of fast|slow; default fast): speed\n"
        "    flag (bool; default false): toggle\n"
        "beta: second help")


def test_describe_empty():
    assert Registry("--none").describe() == ""


# ---------------------------------------------------------------- union

def test_union_keeps_order_and_aliases(registry):
    other = Registry("--other")
    gamma = other.register(Entry("gamma", _build, aliases=("g", "c")))
    delta = Entry("delta", _build)
    merged = Registry.union("--both", registry, other, entries=(delta,))
    assert merged.flag == "--both"
    assert merged.names == ["alpha", "beta", "gamma", "delta"]
    assert merged.entry("g") is gamma and merged.entry("c") is gamma
    assert merged.entry("a") is ALPHA and merged.entry("delta") is delta
    assert merged.resolve("g+a:n=2")[1].params["n"] == 2
    # the inputs are unchanged
    assert registry.names == ["alpha", "beta"] and "delta" not in registry
    assert other.names == ["gamma"]
    # errors name the union's flag
    with pytest.raises(SpecError, match=re.escape("--both: unknown name 'zeta'; valid choices: "
                                                  "alpha, beta, gamma, delta.")):
        merged.resolve("zeta")


def test_union_rejects_duplicates(registry):
    again = Registry("--again")
    again.register(Entry("beta", _build))
    with pytest.raises(ValueError, match="^--both: 'beta' registered twice$"):
        Registry.union("--both", registry, again)
    with pytest.raises(ValueError, match="^--both: 'a' registered twice$"):
        Registry.union("--both", registry, entries=(Entry("a", _build),))
    with pytest.raises(ValueError, match="^--both: 'alpha' registered twice$"):
        Registry.union("--both", registry, registry)


def test_union_of_nothing():
    assert Registry.union("--empty").names == []


# ---------------------------------------------------------------- Reference (lazy builders)

def test_a_string_builder_is_a_reference_imported_at_the_first_call():
    entry = Entry(name="root", build="math:sqrt")
    assert entry.build == Reference("math:sqrt") and entry == Entry(name="root", build="math:sqrt")
    assert entry.build(9.0) == 3.0 and entry.build.resolve() is math.sqrt


def test_a_reference_resolves_a_dotted_attribute_once():
    reference = Reference("collections:OrderedDict.fromkeys")
    assert reference.resolve() == collections.OrderedDict.fromkeys
    assert reference(["a"]) == collections.OrderedDict(a=None)
    assert repr(reference) == "Reference('collections:OrderedDict.fromkeys')"


@pytest.mark.parametrize("target", ["math", "math:", ":sqrt", ""])
def test_a_reference_needs_module_and_attribute(target):
    with pytest.raises(ValueError, match="expected 'module:attribute'"):
        Reference(target)


def test_a_mistyped_reference_fails_when_resolved():
    with pytest.raises(AttributeError):
        Reference("math:no_such_function").resolve()
    with pytest.raises(ModuleNotFoundError):
        Reference("no_such_module:f")()
