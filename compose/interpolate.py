"""Interpolate a compose file the way compose does, for scripts/check-compose.sh.

usage: interpolate.py FILE ENV_JSON OUT_JSON

Reads FILE (YAML, merge keys resolved), replaces ${...} in every string
value (not in keys, as compose does) following the compose-spec
interpolation rules ($$, $VAR, ${VAR}, ${VAR:-d}, ${VAR-d}, ${VAR:?e},
${VAR?e}, ${VAR:+a}, ${VAR+a}, nested operands), with the variables in
ENV_JSON only (never the caller's environment), and writes the result as
JSON to OUT_JSON for the schema checks.

Stricter than compose, so that the check means something:
- a variable that is unset and has no default is an error (compose would
  warn and substitute an empty string);
- interpolation is allowed only where compose keeps the value a string
  (environment values, command arguments, volume specs, TURN URLs...): a
  value that compose would convert after interpolation (replicas, cpus,
  ports) must be written literally, so that the schema check of the file
  as written covers it.

Exit status: 0 done, 1 a required variable is missing (the message names
it), 2 any other error.
"""

import json
import re
import sys

from ruamel.yaml import YAML

NAME = re.compile(r"[_A-Za-z][_A-Za-z0-9]*")
OPS = (":-", "-", ":?", "?", ":+", "+")
# Where interpolated values may appear: compose hands these on as strings.
STRING_PATHS = [
    re.compile(p)
    for p in (
        r"^services\.[^.]+\.environment\.[^.]+$",
        r"^services\.[^.]+\.command\.\d+$",
        r"^services\.[^.]+\.volumes\.\d+$",
        # An image reference stays a string; TALLOW_IMAGE pins the release.
        r"^services\.[^.]+\.image$",
    )
]


class Missing(Exception):
    pass


class Unset(Exception):
    pass


def closing_brace(s, j):
    """Index of the `}` closing the expression whose body starts at j."""
    depth = 1
    k = j
    while k < len(s):
        if s.startswith("$$", k):
            k += 2
        elif s.startswith("${", k):
            depth += 1
            k += 2
        elif s[k] == "}":
            depth -= 1
            if depth == 0:
                return k
            k += 1
        else:
            k += 1
    raise ValueError(f"unterminated ${{ in {s!r}")


def interpolate(s, env):
    out = []
    i = 0
    while i < len(s):
        if s[i] != "$":
            out.append(s[i])
            i += 1
            continue
        if s.startswith("$$", i):
            out.append("$")
            i += 2
            continue
        if s.startswith("${", i):
            m = NAME.match(s, i + 2)
            if not m:
                raise ValueError(f"invalid interpolation in {s!r}")
            name = m.group()
            end = closing_brace(s, m.end())
            rest = s[m.end():end]
            value = env.get(name)
            if rest == "":
                if value is None:
                    raise Unset(name)
                out.append(value)
            else:
                op = next((o for o in OPS if rest.startswith(o)), None)
                if op is None:
                    raise ValueError(f"unsupported interpolation ${{{name}{rest}}}")
                arg = rest[len(op):]
                # With a colon, empty counts as unset.
                unset = value is None or (op.startswith(":") and value == "")
                if op in (":-", "-"):
                    out.append(interpolate(arg, env) if unset else value)
                elif op in (":?", "?"):
                    if unset:
                        raise Missing(f"{name}: {interpolate(arg, env)}")
                    out.append(value)
                else:
                    out.append("" if unset else interpolate(arg, env))
            i = end + 1
            continue
        m = NAME.match(s, i + 1)
        if m:
            value = env.get(m.group())
            if value is None:
                raise Unset(m.group())
            out.append(value)
            i = m.end()
            continue
        out.append("$")
        i += 1
    return "".join(out)


def walk(node, env, path):
    if isinstance(node, dict):
        return {k: walk(v, env, f"{path}.{k}" if path else str(k)) for k, v in node.items()}
    if isinstance(node, list):
        return [walk(v, env, f"{path}.{i}") for i, v in enumerate(node)]
    if isinstance(node, str) and "$" in node:
        new = interpolate(node, env)
        if new != node.replace("$$", "$") and not any(p.match(path) for p in STRING_PATHS):
            raise ValueError(
                f"{path}: interpolation in a value compose converts after interpolating; "
                "write it literally (or extend the check to cover it)"
            )
        return new
    return node


def main():
    src, env_file, out_file = sys.argv[1:4]
    with open(env_file) as f:
        env = json.load(f)
    with open(src) as f:
        doc = YAML(typ="safe", pure=True).load(f)
    try:
        result = walk(doc, env, "")
    except Missing as e:
        print(f"{src}: required variable missing: {e}", file=sys.stderr)
        return 1
    except Unset as e:
        print(f"{src}: ${{{e}}} is unset and has no default (compose would substitute an empty string)",
              file=sys.stderr)
        return 2
    except ValueError as e:
        print(f"{src}: {e}", file=sys.stderr)
        return 2
    with open(out_file, "w") as f:
        json.dump(result, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
