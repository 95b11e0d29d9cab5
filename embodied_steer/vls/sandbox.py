"""Compile untrusted reward programs into :class:`~embodied_steer.vls.program.RewardProgram`.

A reward program is a small Python module that defines ``stage_1(keypoints, trajectory)``,
``stage_2(...)``, ... with tensor operations. It may come from a VLM, so it is treated as hostile:

1. **Static check** (``ast``, nothing runs): every syntax node must be on an allow-list (see
   ``docs/design.md``, "Reward-program sandbox"). No imports (except the no-op declarations
   ``import torch`` / ``import math`` / ``import torch.nn.functional as F``), no names with ``__``,
   no attribute access except allow-listed torch functions, tensor methods and value attributes,
   no calls except those, no ``while``, no comprehensions / lambdas / classes / nested functions /
   ``try`` / ``with`` / ``global`` / ``del`` / ``yield`` / ``await``, ``for`` only over
   ``range(<int literals>)`` with bounded iterations, literal exponents only small. Violations raise
   :class:`~embodied_steer.vls.errors.SandboxViolation` naming the line, the construct and why.
2. **Rewrite**: every operator, call, attribute read and subscript becomes a call of a guarded
   helper (:mod:`embodied_steer.vls.runtime`) that checks value types, a wall-clock deadline and
   size / memory / work budgets before it lets torch do the work. The module runs with empty
   builtins.
3. **Probe**: a first run of every stage on dummy inputs in a short-lived subprocess under
   ``RLIMIT_AS`` / ``RLIMIT_CPU`` and a wall-clock timeout, with a backward pass (skipped with
   ``SandboxLimits(probe=False)``, e.g. for the programs shipped with the package).

After that the program runs in-process (gradients are needed there), still through the guards.
"""

from __future__ import annotations

import ast
import hashlib
import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

from embodied_steer.vls.errors import RewardProgramError, SandboxLimitExceeded, SandboxViolation
from embodied_steer.vls.limits import SandboxLimits
from embodied_steer.vls.program import PROGRAM_FILENAME, RewardProgram
from embodied_steer.vls.runtime import (
    BUILTIN_FUNCTIONS,
    FORBIDDEN_KEYWORDS,
    HELPER_ATTRIBUTE,
    HELPER_BINOP,
    HELPER_COMPARE,
    HELPER_CONSTANTS,
    HELPER_FUNCTIONS,
    HELPER_GETITEM,
    HELPER_METHOD,
    HELPER_SLICE,
    HELPER_UNOP,
    MATH_CONSTANTS,
    MATH_FUNCTIONS,
    TENSOR_METHODS,
    TORCH_CONSTANTS,
    TORCH_FUNCTIONS,
    VALUE_ATTRIBUTES,
    Guard,
    Runtime,
)

__all__ = ["SandboxLimits", "compile_reward_program", "check_reward_program"]

PARAMETERS = ("keypoints", "trajectory")
STAGE_NAME = re.compile(r"stage_([1-9][0-9]*)\Z")
#: import statements accepted as declarations: (module, alias) → the namespace name they bind.
DECLARATION_IMPORTS = {("torch", None): "torch", ("torch", "torch"): "torch", ("math", None): "math",
                       ("math", "math"): "math", ("torch.nn.functional", "F"): "F"}
NAMESPACES = {"torch": "", "F": "nn.functional.", "math": "math."}
RESERVED = frozenset(NAMESPACES) | BUILTIN_FUNCTIONS
_STRING = re.compile(r"[A-Za-z0-9_\-]*\Z")

_BINOPS = {ast.Add: "+", ast.Sub: "-", ast.Mult: "*", ast.Div: "/", ast.FloorDiv: "//", ast.Mod: "%",
           ast.Pow: "**", ast.MatMult: "@", ast.BitAnd: "&", ast.BitOr: "|", ast.BitXor: "^"}
_UNOPS = {ast.USub: "-", ast.UAdd: "+", ast.Not: "not", ast.Invert: "~"}
_COMPARISONS = {ast.Eq: "==", ast.NotEq: "!=", ast.Lt: "<", ast.LtE: "<=", ast.Gt: ">", ast.GtE: ">="}

#: names that hostile programs reach for, with the reason they are not there.
_KNOWN_DANGEROUS = {
    "eval": "runs arbitrary code", "exec": "runs arbitrary code", "compile": "builds code objects",
    "open": "file access", "__import__": "imports modules", "getattr": "reaches arbitrary attributes",
    "setattr": "writes attributes", "delattr": "deletes attributes", "globals": "exposes the module namespace",
    "locals": "exposes the frame", "vars": "exposes namespaces", "dir": "introspection",
    "type": "builds and inspects classes", "object": "the root of the class tree", "super": "class machinery",
    "input": "I/O", "print": "I/O", "breakpoint": "starts a debugger", "help": "I/O", "iter": "iteration protocol",
    "next": "iteration protocol", "memoryview": "raw memory", "bytearray": "raw memory", "id": "object addresses",
    "classmethod": "class machinery", "staticmethod": "class machinery", "property": "class machinery",
    "isinstance": "introspection", "issubclass": "introspection", "hasattr": "reaches arbitrary attributes",
    "os": "operating-system access", "sys": "interpreter access", "subprocess": "process creation",
    "socket": "network access", "builtins": "the builtins module", "exit": "ends the process",
    "quit": "ends the process", "map": "calls arbitrary functions", "filter": "calls arbitrary functions",
    "format": "string formatting", "chr": "string building", "ord": "string building", "str": "string building",
    "repr": "string building", "bytes": "raw memory", "list": "containers", "dict": "containers",
    "set": "containers", "tuple": "containers", "enumerate": "iteration protocol", "zip": "iteration protocol",
    "pow": "unbounded integer powers (use **)", "divmod": "not needed", "hash": "introspection",
    "callable": "introspection", "frozenset": "containers", "slice": "use a[i:j]", "all": "use torch.all",
    "any": "use torch.any", "round": "use torch.round", "sorted": "iteration protocol", "reversed": "iteration protocol",
}

_STATEMENT_REASONS = {
    ast.Import: "imports are not allowed (only `import torch`, `import math` and "
                "`import torch.nn.functional as F`, which bind the sandbox's own namespaces)",
    ast.ImportFrom: "imports are not allowed",
    ast.While: "`while` loops are not allowed (use `for i in range(<int literal>)`)",
    ast.With: "`with` is not allowed", ast.AsyncWith: "`async with` is not allowed",
    ast.Try: "`try` is not allowed (errors must surface)", ast.TryStar: "`try` is not allowed (errors must surface)",
    ast.Raise: "`raise` is not allowed", ast.Assert: "`assert` is not allowed",
    ast.Delete: "`del` is not allowed", ast.Global: "`global` is not allowed", ast.Nonlocal: "`nonlocal` is not allowed",
    ast.ClassDef: "classes are not allowed", ast.AsyncFunctionDef: "async functions are not allowed",
    ast.AsyncFor: "`async for` is not allowed", ast.Match: "`match` is not allowed",
    ast.TypeAlias: "type aliases are not allowed",
}
_EXPRESSION_REASONS = {
    ast.Lambda: "lambdas are not allowed", ast.ListComp: "comprehensions are not allowed (use tensor operations)",
    ast.SetComp: "comprehensions are not allowed", ast.DictComp: "comprehensions are not allowed",
    ast.GeneratorExp: "generator expressions are not allowed", ast.Dict: "dict literals are not allowed",
    ast.Set: "set literals are not allowed", ast.JoinedStr: "f-strings are not allowed",
    ast.FormattedValue: "f-strings are not allowed", ast.NamedExpr: "`:=` is not allowed",
    ast.Await: "`await` is not allowed", ast.Yield: "`yield` is not allowed (no generators)",
    ast.YieldFrom: "`yield` is not allowed (no generators)", ast.Starred: "`*` unpacking is not allowed",
}


def _describe(node: ast.AST) -> str:
    names = {ast.Import: "import", ast.ImportFrom: "from-import", ast.While: "while loop", ast.With: "with block",
             ast.Try: "try block", ast.TryStar: "try block", ast.Raise: "raise", ast.Assert: "assert",
             ast.Delete: "del", ast.Global: "global", ast.Nonlocal: "nonlocal", ast.ClassDef: "class definition",
             ast.Lambda: "lambda", ast.ListComp: "list comprehension", ast.SetComp: "set comprehension",
             ast.DictComp: "dict comprehension", ast.GeneratorExp: "generator expression", ast.Dict: "dict literal",
             ast.Set: "set literal", ast.JoinedStr: "f-string", ast.NamedExpr: "walrus assignment",
             ast.Yield: "yield", ast.YieldFrom: "yield from", ast.Await: "await", ast.Starred: "starred expression"}
    return names.get(type(node), type(node).__name__)


class _Checker:
    """Walks the syntax tree and raises :class:`SandboxViolation` at the first disallowed construct."""

    def __init__(self, limits: SandboxLimits) -> None:
        self.limits = limits
        self.module_constants: set[str] = set()
        self.locals: set[str] = set()
        self.stage: str | None = None

    # -- helpers ------------------------------------------------------------------------------
    def fail(self, node: ast.AST, construct: str, reason: str) -> None:
        raise SandboxViolation(construct, reason, line=getattr(node, "lineno", None),
                               col=getattr(node, "col_offset", None), stage=self.stage)

    def check_identifier(self, node: ast.AST, name: str, what: str) -> None:
        if "__" in name:
            self.fail(node, f"{what} '{name}'", "names containing '__' (dunder names) are not allowed anywhere")

    # -- module ---------------------------------------------------------------------------------
    def check_module(self, tree: ast.Module) -> list[str]:
        stages: dict[int, ast.FunctionDef] = {}
        for i, node in enumerate(tree.body):
            if isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant) and isinstance(node.value.value, str):
                continue  # docstring / string comment
            if isinstance(node, ast.Import):
                self.check_import(node)
            elif isinstance(node, ast.Assign):
                self.check_module_constant(node)
            elif isinstance(node, ast.AnnAssign) and node.value is not None and isinstance(node.target, ast.Name):
                self.check_annotation(node.annotation)
                self.check_module_constant(ast.copy_location(ast.Assign(targets=[node.target], value=node.value), node))
            elif isinstance(node, ast.FunctionDef):
                number = self.check_function(node)
                if number in stages:
                    self.fail(node, f"function '{node.name}'", "is defined twice")
                stages[number] = node
            else:
                self.check_forbidden_statement(node)
                self.fail(node, _describe(node), "only stage functions, `import torch` and constant assignments "
                                                 "are allowed at the top level")
        if not stages:
            raise SandboxViolation("program", "defines no stage function (expected `def stage_1(keypoints, trajectory):`)")
        numbers = sorted(stages)
        if numbers != list(range(1, len(numbers) + 1)):
            raise SandboxViolation("stage functions " + ", ".join(f"stage_{n}" for n in numbers),
                                   "stages must be numbered stage_1, stage_2, ... without gaps")
        if len(numbers) > self.limits.max_stages:
            raise SandboxViolation(f"{len(numbers)} stage functions", f"at most {self.limits.max_stages} are allowed")
        return [f"stage_{n}" for n in numbers]

    def check_import(self, node: ast.Import) -> None:
        for alias in node.names:
            if (alias.name, alias.asname) not in DECLARATION_IMPORTS:
                text = f"import {alias.name}" + (f" as {alias.asname}" if alias.asname else "")
                self.fail(node, f"'{text}'", _STATEMENT_REASONS[ast.Import])

    def check_module_constant(self, node: ast.Assign) -> None:
        if len(node.targets) != 1 or not isinstance(node.targets[0], ast.Name):
            self.fail(node, "assignment", "top-level assignments must bind one name to a constant")
        target = node.targets[0]
        assert isinstance(target, ast.Name)
        self.check_identifier(target, target.id, "name")
        if target.id in RESERVED or target.id in PARAMETERS:
            self.fail(target, f"assignment to '{target.id}'", "this name is reserved")
        self.check_constant_expression(node.value)
        self.module_constants.add(target.id)

    def check_constant_expression(self, node: ast.expr) -> None:
        if isinstance(node, ast.Constant) and type(node.value) in (int, float, bool):
            return
        if isinstance(node, ast.UnaryOp) and type(node.op) in (ast.USub, ast.UAdd):
            return self.check_constant_expression(node.operand)
        if isinstance(node, ast.BinOp) and type(node.op) in (ast.Add, ast.Sub, ast.Mult, ast.Div):
            self.check_constant_expression(node.left)
            return self.check_constant_expression(node.right)
        if isinstance(node, (ast.Tuple, ast.List)) and isinstance(node.ctx, ast.Load):
            for e in node.elts:
                self.check_constant_expression(e)
            return
        if isinstance(node, ast.Name) and node.id in self.module_constants:
            return
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in ("math", "torch") \
                and node.attr in ("pi", "e", "tau") and node.attr in (MATH_CONSTANTS if node.value.id == "math" else TORCH_CONSTANTS):
            return
        self.fail(node, _describe(node), "top-level constants may only use numbers, + - * /, tuples and "
                                         "earlier constants")

    # -- functions -------------------------------------------------------------------------------
    def check_function(self, node: ast.FunctionDef) -> int:
        match = STAGE_NAME.match(node.name)
        self.stage = None
        if not match:
            self.check_identifier(node, node.name, "function")
            self.fail(node, f"function '{node.name}'", "only stage functions named stage_1, stage_2, ... may be defined")
        assert match is not None
        self.stage = node.name
        if node.decorator_list:
            self.fail(node.decorator_list[0], "decorator", "decorators are not allowed")
        if getattr(node, "type_params", None):
            self.fail(node, "type parameters", "are not allowed")
        a = node.args
        names = [arg.arg for arg in a.args]
        if a.posonlyargs or a.kwonlyargs or a.vararg or a.kwarg or a.defaults or a.kw_defaults \
                or tuple(names) != PARAMETERS:
            self.fail(node, f"signature of '{node.name}'", "must be exactly `(keypoints, trajectory)`: no defaults, "
                                                           "*args, **kwargs or other parameters")
        for annotation in [arg.annotation for arg in a.args] + [node.returns]:
            if annotation is not None:
                self.check_annotation(annotation)
        self.locals = set(PARAMETERS) | self.assigned_names(node.body)
        self.check_body(node.body, 1)
        if not any(isinstance(n, ast.Return) for n in ast.walk(node)):
            self.fail(node, f"function '{node.name}'", "never returns a reward")
        self.stage = None
        return int(match.group(1))

    def check_annotation(self, node: ast.expr) -> None:
        """Annotations are dropped unevaluated; still, only type names are accepted in them."""
        cur = node
        while isinstance(cur, ast.Attribute):
            self.check_identifier(cur, cur.attr, "attribute")
            cur = cur.value
        if isinstance(cur, ast.Name):
            self.check_identifier(cur, cur.id, "name")
            return
        if isinstance(node, ast.Constant) and (node.value is None or isinstance(node.value, str)):
            return
        self.fail(node, "annotation", "annotations may only name a type (e.g. torch.Tensor)")

    def assigned_names(self, body: list[ast.stmt]) -> set[str]:
        names: set[str] = set()
        for stmt in body:
            for n in ast.walk(stmt):
                if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store):
                    names.add(n.id)
        return names

    def check_body(self, body: list[ast.stmt], iterations: int) -> None:
        for stmt in body:
            self.check_statement(stmt, iterations)

    def check_forbidden_statement(self, node: ast.AST) -> None:
        for kind, reason in _STATEMENT_REASONS.items():
            if isinstance(node, kind):
                if isinstance(node, ast.Import):
                    names = ", ".join(a.name for a in node.names)
                    self.fail(node, f"'import {names}'", reason)
                if isinstance(node, ast.ImportFrom):
                    self.fail(node, f"'from {node.module} import ...'", reason)
                self.fail(node, _describe(node), reason)
        if isinstance(node, ast.FunctionDef):
            self.fail(node, f"nested function '{node.name}'", "functions may only be defined at the top level")

    def check_store(self, target: ast.expr) -> None:
        if isinstance(target, ast.Name):
            self.check_identifier(target, target.id, "name")
            if target.id in RESERVED:
                self.fail(target, f"assignment to '{target.id}'", "this name is reserved for the sandbox's functions")
            return
        if isinstance(target, (ast.Tuple, ast.List)):
            for e in target.elts:
                if isinstance(e, ast.Starred):
                    self.fail(e, "starred assignment", "`*` unpacking is not allowed")
                self.check_store(e)
            return
        if isinstance(target, ast.Attribute):
            self.fail(target, f"attribute assignment '.{target.attr} = ...'", "programs may not write attributes")
        if isinstance(target, ast.Subscript):
            self.fail(target, "item assignment 'x[...] = ...'", "programs may not modify tensors in place "
                                                                "(build a new tensor, e.g. with torch.where)")
        self.fail(target, _describe(target), "can only assign to plain names")

    def check_statement(self, node: ast.stmt, iterations: int) -> None:
        if isinstance(node, ast.Assign):
            for t in node.targets:
                self.check_store(t)
            self.check_expression(node.value)
        elif isinstance(node, ast.AugAssign):
            if not isinstance(node.target, ast.Name):
                self.check_store(node.target)
            self.check_store(node.target)
            self.check_operator(node, node.op, node.value)
            self.check_expression(node.value)
        elif isinstance(node, ast.AnnAssign):
            self.check_annotation(node.annotation)
            self.check_store(node.target)
            if not isinstance(node.target, ast.Name):
                self.fail(node, "annotated assignment", "can only assign to plain names")
            if node.value is not None:
                self.check_expression(node.value)
        elif isinstance(node, ast.Return):
            if node.value is None:
                self.fail(node, "return", "must return a reward tensor")
            self.check_expression(node.value)
        elif isinstance(node, ast.If):
            self.check_expression(node.test)
            self.check_body(node.body, iterations)
            self.check_body(node.orelse, iterations)
        elif isinstance(node, ast.For):
            n = self.check_loop(node)
            total = iterations * n
            if total > self.limits.max_total_iterations:
                self.fail(node, "nested for loops", f"run {total} iterations in all (at most "
                                                    f"{self.limits.max_total_iterations})")
            self.check_body(node.body, total)
        elif isinstance(node, (ast.Pass, ast.Break, ast.Continue)):
            pass
        elif isinstance(node, ast.Expr):
            if isinstance(node.value, ast.Constant) and isinstance(node.value.value, str):
                return  # docstring
            self.check_expression(node.value)
            self.fail(node, "expression statement", "a bare expression does nothing in a reward program "
                                                    "(assign it or return it)")
        else:
            self.check_forbidden_statement(node)
            self.fail(node, _describe(node), "this statement is not in the sandbox's allow-list")

    def check_loop(self, node: ast.For) -> int:
        if node.orelse:
            self.fail(node, "for ... else", "`else` on loops is not allowed")
        if not isinstance(node.target, ast.Name):
            self.fail(node.target, "loop target", "must be a plain name")
        self.check_store(node.target)
        it = node.iter
        if not (isinstance(it, ast.Call) and isinstance(it.func, ast.Name) and it.func.id == "range"
                and not it.keywords and 1 <= len(it.args) <= 3):
            self.fail(it, "for loop", "can only iterate over range(<int literals>)")
        bounds = [self.int_literal(a) for a in it.args]
        try:
            n = len(range(*bounds))
        except ValueError as exc:
            self.fail(it, "range()", str(exc))
        if n > self.limits.max_loop_iterations:
            self.fail(it, f"range of {n} iterations", f"a loop may run at most {self.limits.max_loop_iterations} times")
        return n

    def int_literal(self, node: ast.expr) -> int:
        sign = 1
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
            sign, node = -1, node.operand
        if isinstance(node, ast.Constant) and type(node.value) is int and abs(node.value) <= 1_000_000:
            return sign * node.value
        self.fail(node, "range() bound", "must be an integer literal (loops are bounded before the program runs)")
        raise AssertionError  # unreachable

    # -- expressions ---------------------------------------------------------------------------
    def namespace_path(self, node: ast.Attribute) -> str | None:
        """``torch.linalg.norm`` → ``"linalg.norm"``; ``F.relu`` → ``"nn.functional.relu"``;
        ``math.sqrt`` → ``"math.sqrt"``; ``None`` when the chain does not start at a namespace."""
        parts: list[str] = []
        cur: ast.expr = node
        while isinstance(cur, ast.Attribute):
            parts.append(cur.attr)
            cur = cur.value
        if isinstance(cur, ast.Name) and cur.id in NAMESPACES and cur.id not in self.locals:
            return NAMESPACES[cur.id] + ".".join(reversed(parts))
        return None

    def check_attribute(self, node: ast.Attribute, *, called: bool) -> None:
        cur: ast.expr = node
        while isinstance(cur, ast.Attribute):
            self.check_identifier(cur, cur.attr, "attribute")
            cur = cur.value
        path = self.namespace_path(node)
        if path is not None:
            shown = path if path.startswith("math.") else f"torch.{path}"
            if called:
                if path.startswith("math."):
                    ok = path[5:] in MATH_FUNCTIONS
                else:
                    ok = path in TORCH_FUNCTIONS
                if not ok:
                    self.fail(node, f"call to '{shown}'", "not in the allow-list of functions")
            else:
                ok = (path[5:] in MATH_CONSTANTS) if path.startswith("math.") else (path in TORCH_CONSTANTS)
                if not ok:
                    self.fail(node, f"attribute '{shown}'", "not in the allow-list (functions can only be called; "
                                                            "constants: pi, e, inf and dtypes)")
            return
        self.check_expression(node.value)
        if called:
            if node.attr not in TENSOR_METHODS:
                self.fail(node, f"method '.{node.attr}()'", "not in the allow-list of tensor methods")
        elif node.attr not in VALUE_ATTRIBUTES:
            self.fail(node, f"attribute '.{node.attr}'", f"only {', '.join(sorted(VALUE_ATTRIBUTES))} can be read")

    def check_call(self, node: ast.Call) -> None:
        func = node.func
        if isinstance(func, ast.Name):
            self.check_identifier(func, func.id, "call to")
            if func.id == "range":
                self.fail(node, "range()", "only allowed as the iterator of a for loop")
            if func.id not in BUILTIN_FUNCTIONS or func.id in self.locals or func.id in self.module_constants:
                reason = _KNOWN_DANGEROUS.get(func.id)
                self.fail(node, f"call to '{func.id}'",
                          f"not in the allow-list ({reason})" if reason else
                          "not in the allow-list of callable functions (stage functions cannot call each other)")
        elif isinstance(func, ast.Attribute):
            self.check_attribute(func, called=True)
        else:
            self.fail(node, "call", "only allow-listed functions and tensor methods can be called")
        for arg in node.args:
            if isinstance(arg, ast.Starred):
                self.fail(arg, "starred argument", "`*args` is not allowed")
            self.check_expression(arg)
        for kw in node.keywords:
            if kw.arg is None:
                self.fail(kw.value, "keyword unpacking", "`**kwargs` is not allowed")
            assert kw.arg is not None
            self.check_identifier(kw.value, kw.arg, "keyword")
            if kw.arg in FORBIDDEN_KEYWORDS:
                self.fail(kw.value, f"keyword '{kw.arg}='", "may write into tensors or pick devices / autograd state")
            self.check_expression(kw.value)

    def check_operator(self, node: ast.AST, op: ast.operator, right: ast.expr) -> None:
        if type(op) not in _BINOPS:
            self.fail(node, f"operator {type(op).__name__}", "not allowed (shifts can build huge integers)")
        if isinstance(op, ast.Pow):
            if isinstance(right, ast.BinOp) and isinstance(right.op, ast.Pow):
                self.fail(node, "nested power a ** b ** c", "not allowed (exponent towers)")
            value = right
            if isinstance(value, ast.UnaryOp) and isinstance(value.op, (ast.USub, ast.UAdd)):
                value = value.operand
            if isinstance(value, ast.Constant) and type(value.value) in (int, float) \
                    and abs(value.value) > self.limits.max_literal_exponent:
                self.fail(node, f"power with exponent {value.value}",
                          f"literal exponents must be at most {self.limits.max_literal_exponent:g} in size")

    def check_expression(self, node: ast.expr) -> None:
        if isinstance(node, ast.Constant):
            v = node.value
            if isinstance(v, str):
                if len(v) > self.limits.max_string_chars or not _STRING.match(v) or "__" in v:
                    self.fail(node, "string literal", f"strings may only be short option names ([A-Za-z0-9_-], at most "
                                                      f"{self.limits.max_string_chars} characters, no '__')")
            elif not (v is None or v is Ellipsis or type(v) in (int, float, bool)):
                self.fail(node, f"{type(v).__name__} literal", "only numbers, True/False/None, ... and short strings")
        elif isinstance(node, ast.Name):
            self.check_identifier(node, node.id, "name")
            if node.id in self.locals or node.id in self.module_constants:
                return
            if node.id in NAMESPACES:
                self.fail(node, f"'{node.id}' used as a value", "namespaces can only be used as `torch.<function>(...)`")
            if node.id in BUILTIN_FUNCTIONS:
                self.fail(node, f"'{node.id}' used as a value", "functions can only be called")
            reason = _KNOWN_DANGEROUS.get(node.id)
            self.fail(node, f"name '{node.id}'", f"not available in reward programs ({reason})" if reason
                      else "is never assigned (unknown name)")
        elif isinstance(node, ast.Attribute):
            self.check_attribute(node, called=False)
        elif isinstance(node, ast.Call):
            self.check_call(node)
        elif isinstance(node, ast.BinOp):
            self.check_operator(node, node.op, node.right)
            self.check_expression(node.left)
            self.check_expression(node.right)
        elif isinstance(node, ast.UnaryOp):
            self.check_expression(node.operand)
        elif isinstance(node, ast.BoolOp):
            for v in node.values:
                self.check_expression(v)
        elif isinstance(node, ast.Compare):
            if len(node.ops) != 1:
                self.fail(node, "chained comparison", "write `(a < b) & (b < c)` instead")
            if type(node.ops[0]) not in _COMPARISONS:
                self.fail(node, f"comparison '{type(node.ops[0]).__name__}'", "only == != < <= > >= are allowed")
            self.check_expression(node.left)
            self.check_expression(node.comparators[0])
        elif isinstance(node, ast.IfExp):
            for v in (node.test, node.body, node.orelse):
                self.check_expression(v)
        elif isinstance(node, ast.Subscript):
            self.check_expression(node.value)
            self.check_index(node.slice)
        elif isinstance(node, (ast.Tuple, ast.List)):
            for e in node.elts:
                if isinstance(e, ast.Starred):
                    self.fail(e, "starred expression", "`*` unpacking is not allowed")
                self.check_expression(e)
        else:
            reason = _EXPRESSION_REASONS.get(type(node), "this expression is not in the sandbox's allow-list")
            self.fail(node, _describe(node), reason)

    def check_index(self, node: ast.expr) -> None:
        if isinstance(node, ast.Slice):
            for part in (node.lower, node.upper, node.step):
                if part is not None:
                    self.check_expression(part)
        elif isinstance(node, ast.Tuple):
            for e in node.elts:
                self.check_index(e)
        else:
            self.check_expression(node)


class _Rewriter(ast.NodeTransformer):
    """Turns every operator, call, attribute read and subscript into a guarded-helper call.

    Runs only on trees :class:`_Checker` accepted."""

    def __init__(self, checker: _Checker, stage_locals: dict[str, set[str]]) -> None:
        self.checker = checker
        self.stage_locals = stage_locals

    @staticmethod
    def helper(name: str, args: list[ast.expr], like: ast.AST, keywords: list[ast.keyword] | None = None) -> ast.Call:
        call = ast.Call(func=ast.Name(id=name, ctx=ast.Load()), args=args, keywords=keywords or [])
        return ast.copy_location(call, like)

    def visit_Module(self, node: ast.Module) -> ast.Module:
        body: list[ast.stmt] = []
        for stmt in node.body:
            if isinstance(stmt, ast.Import):
                continue  # declaration imports bind nothing: the namespaces are resolved statically
            if isinstance(stmt, ast.FunctionDef):
                self.checker.locals = self.stage_locals[stmt.name]
            else:
                self.checker.locals = set()
            body.append(self.visit(stmt))
        node.body = body
        return node

    def visit_FunctionDef(self, node: ast.FunctionDef) -> ast.FunctionDef:
        for arg in node.args.args:
            arg.annotation = None
        node.returns = None
        node.body = [self.visit(s) for s in node.body]
        return node

    def visit_AugAssign(self, node: ast.AugAssign) -> ast.Assign:
        assert isinstance(node.target, ast.Name)
        value = self.helper(HELPER_BINOP, [ast.Constant(_BINOPS[type(node.op)]),
                                           ast.Name(id=node.target.id, ctx=ast.Load()), self.visit(node.value)], node)
        return ast.copy_location(ast.Assign(targets=[ast.Name(id=node.target.id, ctx=ast.Store())], value=value), node)

    def visit_AnnAssign(self, node: ast.AnnAssign) -> ast.stmt:
        if node.value is None:
            return ast.copy_location(ast.Pass(), node)
        return ast.copy_location(ast.Assign(targets=[node.target], value=self.visit(node.value)), node)

    def visit_BinOp(self, node: ast.BinOp) -> ast.Call:
        return self.helper(HELPER_BINOP, [ast.Constant(_BINOPS[type(node.op)]), self.visit(node.left),
                                          self.visit(node.right)], node)

    def visit_UnaryOp(self, node: ast.UnaryOp) -> ast.Call:
        return self.helper(HELPER_UNOP, [ast.Constant(_UNOPS[type(node.op)]), self.visit(node.operand)], node)

    def visit_Compare(self, node: ast.Compare) -> ast.Call:
        return self.helper(HELPER_COMPARE, [ast.Constant(_COMPARISONS[type(node.ops[0])]), self.visit(node.left),
                                            self.visit(node.comparators[0])], node)

    def visit_Call(self, node: ast.Call) -> ast.Call:
        args = [self.visit(a) for a in node.args]
        keywords = [ast.keyword(arg=k.arg, value=self.visit(k.value)) for k in node.keywords]
        func = node.func
        if isinstance(func, ast.Attribute):
            path = self.checker.namespace_path(func)
            if path is not None:
                lookup = ast.Subscript(value=ast.Name(id=HELPER_FUNCTIONS, ctx=ast.Load()),
                                       slice=ast.Constant(path), ctx=ast.Load())
                return ast.copy_location(ast.Call(func=ast.copy_location(lookup, func), args=args, keywords=keywords), node)
            return self.helper(HELPER_METHOD, [self.visit(func.value), ast.Constant(func.attr), *args], node, keywords)
        return ast.copy_location(ast.Call(func=func, args=args, keywords=keywords), node)

    def visit_Attribute(self, node: ast.Attribute) -> ast.expr:
        path = self.checker.namespace_path(node)
        if path is not None:
            key = path if path.startswith("math.") else f"torch.{path}"
            return ast.copy_location(ast.Subscript(value=ast.Name(id=HELPER_CONSTANTS, ctx=ast.Load()),
                                                   slice=ast.Constant(key), ctx=ast.Load()), node)
        return self.helper(HELPER_ATTRIBUTE, [self.visit(node.value), ast.Constant(node.attr)], node)

    def visit_Subscript(self, node: ast.Subscript) -> ast.Call:
        return self.helper(HELPER_GETITEM, [self.visit(node.value), self.index(node.slice)], node)

    def index(self, node: ast.expr) -> ast.expr:
        if isinstance(node, ast.Slice):
            parts = [self.visit(p) if p is not None else ast.Constant(None) for p in (node.lower, node.upper, node.step)]
            return self.helper(HELPER_SLICE, parts, node)
        if isinstance(node, ast.Tuple):
            return ast.copy_location(ast.Tuple(elts=[self.index(e) for e in node.elts], ctx=ast.Load()), node)
        return self.visit(node)


def _parse(source: str, limits: SandboxLimits) -> ast.Module:
    if not isinstance(source, str):
        raise RewardProgramError(f"a reward program must be text, got {type(source).__name__}")
    if len(source) > limits.max_source_chars:
        raise SandboxViolation(f"program of {len(source):,} characters",
                               f"at most {limits.max_source_chars:,} are allowed")
    if "\x00" in source:
        raise SandboxViolation("NUL character", "programs must be plain text")
    try:
        tree = ast.parse(source, filename=PROGRAM_FILENAME, mode="exec")
    except SyntaxError as exc:
        raise RewardProgramError(f"syntax error at line {exc.lineno}: {exc.msg}", line=exc.lineno) from None
    except (RecursionError, MemoryError, ValueError) as exc:
        raise SandboxViolation("program", f"cannot be parsed safely ({type(exc).__name__}: {exc})") from None
    count, stack = 0, [(tree, 1)]
    while stack:  # iterative: the tree may be deeper than Python's recursion limit
        node, depth = stack.pop()
        count += 1
        if count > limits.max_ast_nodes:
            raise SandboxViolation("program of more than {:,} syntax nodes".format(limits.max_ast_nodes),
                                   "programs must be small")
        if depth > limits.max_ast_depth:
            raise SandboxViolation(f"expression nested more than {limits.max_ast_depth} levels deep",
                                   "split it into several assignments", line=getattr(node, "lineno", None))
        stack.extend((child, depth + 1) for child in ast.iter_child_nodes(node))
    return tree


def check_reward_program(source: str, *, limits: SandboxLimits | None = None) -> tuple[str, ...]:
    """Run only the static check; return the stage names or raise :class:`SandboxViolation`."""
    limits = limits or SandboxLimits()
    checker = _Checker(limits)
    return tuple(checker.check_module(_parse(source, limits)))


def compile_reward_program(source: str, *, limits: SandboxLimits | None = None) -> RewardProgram:
    """Check, rewrite, probe and load a reward program.

    Args:
        source: program text defining ``stage_1(keypoints, trajectory)``, ``stage_2``, ...
        limits: sandbox limits (defaults: :class:`SandboxLimits`).

    Returns:
        The :class:`RewardProgram`; call it with a 0-based stage index.

    Raises:
        SandboxViolation: a construct outside the allow-list (names the line, construct, reason).
        SandboxLimitExceeded: the probe run went over a time or memory limit.
        RewardProgramError: a syntax error, or a stage that fails on the probe's dummy inputs.
    """
    limits = limits or SandboxLimits()
    tree = _parse(source, limits)
    checker = _Checker(limits)
    stage_names = tuple(checker.check_module(tree))
    stage_locals: dict[str, set[str]] = {}
    for node in tree.body:
        if isinstance(node, ast.FunctionDef):
            stage_locals[node.name] = set(PARAMETERS) | checker.assigned_names(node.body)
    tree = _Rewriter(checker, stage_locals).visit(tree)
    ast.fix_missing_locations(tree)
    _assert_rewritten(tree)
    try:
        code = compile(tree, PROGRAM_FILENAME, "exec", dont_inherit=True)
    except (SyntaxError, ValueError, RecursionError) as exc:
        raise RewardProgramError(f"could not compile the checked program: {exc}") from None
    guard = Guard(limits)
    namespace = Runtime(guard).globals()
    try:
        exec(code, namespace)  # noqa: S102 - checked and rewritten code, empty builtins, guarded helpers
    except RewardProgramError:
        raise
    except Exception as exc:  # noqa: BLE001 - top-level constants failed
        raise RewardProgramError(f"top-level constants failed: {type(exc).__name__}: {exc}") from None
    functions = tuple(namespace[name] for name in stage_names)
    if limits.probe:
        key = hashlib.sha256(json.dumps([source, _limits_dict(limits)], sort_keys=True).encode()).hexdigest()
        if key not in _PROBED:  # the same text under the same limits passed before in this process
            _probe(source, limits)
            _PROBED.add(key)
    return RewardProgram(source=source, stage_names=stage_names, limits=limits, _functions=functions, _guard=guard)


def _assert_rewritten(tree: ast.AST) -> None:
    """Defence in depth: after rewriting, no raw attribute access, operator or subscript remains
    except the helper-table lookups the rewriter itself produced."""
    for node in ast.walk(tree):
        if isinstance(node, (ast.Attribute, ast.BinOp, ast.Compare, ast.AugAssign, ast.Import, ast.ImportFrom)):
            raise RewardProgramError(f"internal error: {type(node).__name__} survived the sandbox rewrite")
        if isinstance(node, ast.Subscript) and not (isinstance(node.value, ast.Name)
                                                    and node.value.id in (HELPER_FUNCTIONS, HELPER_CONSTANTS)):
            raise RewardProgramError("internal error: a subscript survived the sandbox rewrite")


# -- probe subprocess ----------------------------------------------------------------------------

#: sha256 of (source, limits) of programs whose probe passed in this process.
_PROBED: set[str] = set()


def _probe(source: str, limits: SandboxLimits) -> None:
    """Run every stage once (forward and backward) on dummy inputs in a resource-limited subprocess."""
    request = json.dumps({"source": source, "limits": _limits_dict(limits)})
    package_root = str(Path(__file__).resolve().parents[2])
    env = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR")}
    env.update(PYTHONPATH=package_root, MALLOC_ARENA_MAX="2", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONDONTWRITEBYTECODE="1",
               CUDA_VISIBLE_DEVICES="")
    try:
        proc = subprocess.run(
            [sys.executable, "-I", "-c", "import sys; sys.path.insert(0, sys.argv[1]); "
             "from embodied_steer.vls.probe import main; main()", package_root],
            input=request, capture_output=True, text=True, timeout=limits.probe_timeout_s, env=env,
            cwd=package_root, start_new_session=True,
        )
    except subprocess.TimeoutExpired:
        raise SandboxLimitExceeded(f"probe run did not finish within {limits.probe_timeout_s:g} s and was killed") from None
    if proc.returncode < 0:
        sig = -proc.returncode
        name = signal.Signals(sig).name if sig in signal.Signals._value2member_map_ else str(sig)
        why = {"SIGXCPU": f"CPU time limit of {limits.probe_cpu_s} s", "SIGKILL": "killed (CPU or memory limit)",
               "SIGSEGV": "crashed", "SIGABRT": "aborted (memory limit?)"}.get(name, "stopped")
        raise SandboxLimitExceeded(f"probe process ended by {name}: {why}")
    try:
        report = json.loads(proc.stdout.strip().splitlines()[-1])
    except (json.JSONDecodeError, IndexError):
        tail = (proc.stderr or "").strip().splitlines()[-3:]
        raise SandboxLimitExceeded(f"probe process exited with status {proc.returncode} without a report"
                                   + (f": {' | '.join(tail)}" if tail else "")) from None
    if not report.get("ok"):
        cls = SandboxLimitExceeded if report.get("kind") == "limit" else RewardProgramError
        raise cls(f"failed on probe inputs (keypoints ({limits.probe_num_keypoints}, 3), trajectory "
                  f"({limits.probe_batch}, {limits.probe_horizon}, 3)): {report.get('error')}")


def _limits_dict(limits: SandboxLimits) -> dict[str, Any]:
    from dataclasses import asdict

    return asdict(limits)

