"""Whether a template only *prints* some variables: then its output for any value is its output for
a placeholder with the value put in the placeholder's place.

`content.render_memo` renders a step once with placeholders (the slow part: CSS inlining and
html2text) and then, for each person, puts the person's name and links where the placeholders are.
That is only the template's own output when the template does nothing with those variables but
print them, which this module decides from the template's syntax tree, before any render:

- every use of a variable is `{{ name }}` on its own (an `Output` node's direct child) or the whole
  test of an `{% if name %}` / `{% elif name %}` (a non-empty value and a placeholder are both true);
- it is not printed inside something that transforms what it prints: `{% filter %}`,
  `{% set x %}…{% endset %}`, `{% macro %}`, `{% call %}`; and block calls (`self.body()`,
  `super()`), whose output could carry the value, are printed as they are too;
- nothing in it is random (the `random` filter) — the placeholder output is rendered once and
  reused, so it must be the same every time;
- every template it extends or includes is named literally and follows the same rules; it
  imports none (an imported macro could do anything with a value passed to it).

Anything else — a comparison, a filter, a method call, a variable passed to a macro — answers
False and the caller renders in full. Conservative on purpose: False costs speed, True must be right.
"""

from __future__ import annotations

from collections.abc import Collection, Iterator

from jinja2 import Environment, TemplateError, nodes

# Nodes whose printed output does not go to the message as it is.
_CAPTURING = (nodes.FilterBlock, nodes.AssignBlock, nodes.Macro, nodes.CallBlock)


def prints_only(env: Environment, name: str, variables: Collection[str]) -> bool:
    """True when template `name` (with what it extends and includes) uses each of `variables`
    only by printing it or testing it for truth, deterministically (the module docstring).
    False when it does more, or cannot be read."""
    try:
        return _check(env, name, frozenset(variables), set())
    except (TemplateError, OSError, RecursionError):
        return False


def _check(env: Environment, name: str, variables: frozenset[str], seen: set[str]) -> bool:
    if name in seen:
        return True
    seen.add(name)
    if env.loader is None:
        return False
    source, _filename, _uptodate = env.loader.get_source(env, name)
    tree = env.parse(source, name)
    if any(True for _ in tree.find_all((nodes.Import, nodes.FromImport))):
        return False
    if any(node.name == "random" for node in tree.find_all(nodes.Filter)):
        return False
    for node in tree.find_all((nodes.Extends, nodes.Include)):
        target = node.template
        if not isinstance(target, nodes.Const) or not isinstance(target.value, str):
            return False  # a computed template name: cannot tell what it renders
        if not _check(env, target.value, variables, seen):
            return False
    return all(_allowed(node, parents) for node, parents in _walk(tree, ()) if _relevant(node, variables))


def _relevant(node: nodes.Node, variables: frozenset[str]) -> bool:
    """A read of one of `variables`, or a call that renders a block (its output may carry one)."""
    if isinstance(node, nodes.Name):
        return node.ctx == "load" and node.name in variables
    return isinstance(node, nodes.Call) and _is_block_call(node)


def _is_block_call(call: nodes.Call) -> bool:
    target = call.node
    if isinstance(target, nodes.Name):
        return target.name in ("super", "caller")
    return isinstance(target, nodes.Getattr) and isinstance(target.node, nodes.Name) and target.node.name == "self"


def _allowed(node: nodes.Node, parents: tuple[nodes.Node, ...]) -> bool:
    if any(isinstance(parent, _CAPTURING) for parent in parents):
        return False
    parent = parents[-1] if parents else None
    if isinstance(parent, nodes.Output):
        return True  # printed as it is (autoescaped in HTML, which leaves the caller's values alone)
    return isinstance(node, nodes.Name) and isinstance(parent, nodes.If) and parent.test is node


def _walk(node: nodes.Node, parents: tuple[nodes.Node, ...]) -> Iterator[tuple[nodes.Node, tuple[nodes.Node, ...]]]:
    yield node, parents
    for child in node.iter_child_nodes():
        yield from _walk(child, (*parents, node))
