"""Removable blocks and layers, found from the graph and the torch module scopes in node names.

Two kinds:
- `residual`: a module whose nodes take one tensor x, end in `x + f(x)` (plus unary ops such as the
  final ReLU), and give back a tensor of x's shape. Removing it makes the module the identity.
- `layer`: a single-path conv (+ BatchNorm + activation) outside residual blocks, whose input
  feeds nothing else and whose output reaches the next conv on a single path. Removing it passes
  its input straight on; when its input and output widths differ (before or after channel
  pruning), the next conv gets the new input width, freshly initialised (LayerPrune section 4.1).
"""
from __future__ import annotations

import ast
from dataclasses import dataclass

import onnx

from graphs.deps import module_of_node, module_of_param
from graphs.shapes import measured_shapes

UNARY_TAIL = {"Relu", "Clip", "LeakyRelu", "HardSwish", "HardSigmoid", "Sigmoid", "Tanh", "Elu", "Selu",
              "Gelu", "Identity", "Dropout", "Mish", "Softplus"}
LAYER_TAIL = {"BatchNormalization", "Relu", "Clip", "LeakyRelu", "HardSwish", "Elu", "Selu", "Identity", "Dropout"}
SPATIAL_PASS = {"MaxPool", "AveragePool", "Relu", "Dropout", "Identity"}
WEIGHTED = {"Conv", "ConvTranspose", "Gemm", "MatMul"}


@dataclass
class Block:
    id: str
    kind: str  # "residual" | "layer"
    members: list[str]  # torch modules replaced by identity
    entry: str  # tensor the block consumes
    exit: str  # tensor the block produces (replaced by `entry`)
    nodes: list[str]
    next_conv: str | None = None  # layer kind, widths differ: the conv node that gets a new input width
    next_weight: str | None = None  # ... and its weight initializer (torch name)
    width_in: int | None = None
    width_out: int | None = None

    def as_dict(self) -> dict:
        return {"id": self.id, "kind": self.kind, "members": self.members, "width_in": self.width_in,
                "width_out": self.width_out, "reinit": module_of_param(self.next_weight) if self.next_weight and self.width_in != self.width_out else None}


@dataclass
class NotRemovable:
    """A module that looks like a block (one input, one output, several weighted layers) but cannot go."""

    id: str
    reason: str

    def as_dict(self) -> dict:
        return {"id": self.id, "reason": self.reason}


class _Graph:
    def __init__(self, model: onnx.ModelProto, shapes: dict):
        self.model = model
        self.nodes = list(model.graph.node)
        self.inits = {i.name for i in model.graph.initializer}
        self.graph_inputs = {i.name for i in model.graph.input}
        self.graph_outputs = {o.name for o in model.graph.output}
        self.shapes = shapes
        self.producer = {out: n for n in self.nodes for out in n.output}
        self.consumers: dict[str, list[onnx.NodeProto]] = {}
        for n in self.nodes:
            for name in n.input:
                self.consumers.setdefault(name, []).append(n)
        self.scope = {n.name: module_of_node(n.name) or _dynamo_scope(n) for n in self.nodes}
        self._under: dict[str, list[onnx.NodeProto]] = {}
        # A weight read by several nodes belongs to a module called several times (a detection head run
        # on every FPN level): its torch module is one, so no single call of it can be removed.
        readers: dict[str, int] = {}
        for n in self.nodes:
            if n.op_type in WEIGHTED and len(n.input) > 1 and n.input[1] in self.inits:
                readers[n.input[1]] = readers.get(n.input[1], 0) + 1
        self.shared = {name for name, count in readers.items() if count > 1}

    def under(self, module: str) -> list[onnx.NodeProto]:
        if module not in self._under:  # asked once per add: YOLO heads hold a hundred adds in one scope
            self._under[module] = [n for n in self.nodes
                                   if self.scope[n.name] == module or self.scope[n.name].startswith(module + ".")]
        return self._under[module]

    def activations(self, node: onnx.NodeProto) -> list[str]:
        return [name for name in node.input if name and name not in self.inits]

    def uses(self, name: str) -> int:
        return len(self.consumers.get(name, [])) + (name in self.graph_outputs)

    def shares_weights(self, nodes) -> bool:
        return any(i in self.shared for n in nodes for i in n.input)

    def boundary(self, region: list[onnx.NodeProto]) -> tuple[set[str], list[str]]:
        """The activations a region reads from outside and the tensors it hands outside."""
        names = {n.name for n in region}
        produced = {out for n in region for out in n.output}
        inputs = {i for n in region for i in self.activations(n) if i not in produced}
        outputs = [o for o in produced
                   if o in self.graph_outputs or any(c.name not in names for c in self.consumers.get(o, []))]
        return inputs, outputs


def _dynamo_scope(node: onnx.NodeProto) -> str:
    """The torch module of a dynamo-exported node, from its metadata: name_scopes ['', 'layer1',
    'layer1.0', 'add'] ends with the op's own name; the entry before it is the module."""
    for prop in node.metadata_props:
        if prop.key == "pkg.torch.onnx.name_scopes":
            try:
                scopes = ast.literal_eval(prop.value)
            except (ValueError, SyntaxError):
                return ""
            names = [s for s in scopes[:-1] if isinstance(s, str) and s]
            return names[-1] if names else ""
    return ""


def removable_blocks(model: onnx.ModelProto, shapes: dict) -> list[Block]:
    """Blocks and layers of a normalised model (see graphs.deps.analyze), in topological order."""
    g = _Graph(model, shapes)
    residual = _residual_blocks(g)
    inside = [b.id for b in residual]
    layers = [b for b in _layers(g) if not any(b.id == r or b.id.startswith(r + ".") for r in inside)]
    order = {n.name: i for i, n in enumerate(g.nodes)}
    return sorted(residual + layers, key=lambda b: order[b.nodes[0]])


def unremovable_modules(model: onnx.ModelProto, shapes: dict, blocks: list[Block]) -> list[NotRemovable]:
    """Modules shaped like blocks (one input, one output, two or more weighted layers: SPPF, C2PSA,
    an attention) that are not removable, each with the reason, in topological order."""
    g = _Graph(model, shapes)
    removable = {b.id for b in blocks}
    order: dict[str, int] = {}
    for i, n in enumerate(g.nodes):
        parts = g.scope[n.name].split(".") if g.scope[n.name] else []
        for k in range(1, len(parts) + 1):
            order.setdefault(".".join(parts[:k]), i)
    def made_of_blocks(module: str, region: list) -> bool:  # a container of removable blocks: list those
        inner = {n for b in blocks if b.id.startswith(module + ".") for n in b.nodes}
        return {n.name for n in region} <= inner
    children: dict[str, int] = {}  # nodes under a module's largest child: a wrapper adds nothing to list
    for module in order:
        parent = module.rsplit(".", 1)[0] if "." in module else ""
        children[parent] = max(children.get(parent, 0), len(g.under(module)))
    candidates = []
    for module in sorted(order, key=order.get):
        region = g.under(module)
        if module in removable or children.get(module) == len(region) or made_of_blocks(module, region):
            continue
        inputs, outputs = g.boundary(region)
        weighted = [n for n in region if n.op_type in WEIGHTED and len(n.input) > 1 and n.input[1] in g.inits]
        if len(inputs) == 1 and len(outputs) == 1 and len(weighted) >= 2:
            candidates.append((module, region, next(iter(inputs)), outputs[0]))
    unknown = {t for _, _, entry, exit_ in candidates for t in (entry, exit_) if not _known(g, t)}
    if unknown:
        g.shapes = {**g.shapes, **measured_shapes(g.model, sorted(unknown))}
    return [NotRemovable(module, _why_not(g, module, region, entry, exit_, removable))
            for module, region, entry, exit_ in candidates]


def _why_not(g: _Graph, module: str, region: list, entry: str, exit_: str, removable: set[str]) -> str:
    attention = any(n.op_type == "MatMul" and len(g.activations(n)) == 2 and g.scope[n.name] == module for n in region)
    kind = "attention (a product of two activations); " if attention else ""
    if g.shares_weights(region):
        reason = "its weights are shared by several calls of the module: removing one call would change the others"
    elif not _same_shape(g, entry, exit_):
        reason = f"it changes the tensor shape {_dims(g, entry)} -> {_dims(g, exit_)}: no identity can replace it"
    else:
        reason = "no identity shortcut (x + f(x)) around it: without it the network computes another function"
    outer = [b for b in removable if module.startswith(b + ".")]
    inner = [b for b in removable if b.startswith(module + ".")]
    if outer:
        reason += f"; the enclosing block {outer[0]} is removable"
    elif inner:
        reason += f"; its blocks {', '.join(sorted(inner)[:3])}{' ...' if len(inner) > 3 else ''} are removable"
    return kind + reason


def _dims(g: _Graph, tensor: str) -> str:
    shape = g.shapes.get(tensor)
    return "x".join("?" if d is None else str(d) for d in shape[1:]) if shape else "?"


def _same_shape(g: _Graph, a: str, b: str) -> bool:
    sa, sb = g.shapes.get(a), g.shapes.get(b)
    return sa is not None and sb is not None and len(sa) == len(sb) and all(
        x == y for x, y in zip(sa[1:], sb[1:])) and None not in sa[1:]


def _residual_blocks(g: _Graph) -> list[Block]:
    candidates = [c for c in (_residual_candidate(g, add) for add in g.nodes) if c is not None]
    unknown = {t for _, _, entry, exit_ in candidates for t in (entry, exit_) if not _known(g, t)}
    if unknown:  # shapes after a run-time Slice (ultralytics' chunk) are lost by inference: measure them
        g.shapes = {**g.shapes, **measured_shapes(g.model, sorted(unknown))}
    blocks: dict[str, Block] = {}
    for module, region, entry, exit_ in candidates:
        if module in blocks or not _same_shape(g, entry, exit_) or g.shares_weights(region):
            continue
        shape = g.shapes[entry]
        blocks[module] = Block(module, "residual", [module], entry, exit_, [n.name for n in region],
                               width_in=shape[1], width_out=shape[1])
    return list(blocks.values())


def _known(g: _Graph, name: str) -> bool:
    shape = g.shapes.get(name)
    return shape is not None and None not in shape[1:]


def _residual_candidate(g: _Graph, add: onnx.NodeProto):
    """(module, region, entry, exit) when `add` ends a module computing x + f(x) (then unary ops, or
    further x' + g(x') as in ultralytics' PSABlock), before the shape check."""
    if add.op_type not in ("Add", "Sum") or len(g.activations(add)) != 2:
        return None
    module = g.scope[add.name]
    if not module:
        return None
    region = g.under(module)
    names = {n.name for n in region}
    inputs, outputs = g.boundary(region)
    if len(inputs) != 1 or len(outputs) != 1:
        return None
    (entry,), (exit_,) = inputs, outputs
    if entry not in add.input:
        return None
    current = add.output[0]
    while current != exit_:  # after the add: unary ops (the block's final ReLU), or another residual add
        nxt = [c for c in g.consumers.get(current, []) if c.name in names]
        adds = [c for c in nxt if c.op_type in ("Add", "Sum") and len(g.activations(c)) == 2]
        if len(nxt) == 1 and nxt[0].op_type in UNARY_TAIL:
            current = nxt[0].output[0]
        elif len(adds) == 1 and len(nxt) > 1:
            current = adds[0].output[0]
        else:
            return None
    return module, region, entry, exit_


def _layers(g: _Graph) -> list[Block]:
    layers = []
    for conv in g.nodes:
        if conv.op_type != "Conv" or conv.input[1] not in g.inits or conv.input[1] in g.shared:
            continue
        if any(a.name == "group" and a.i != 1 for a in conv.attribute):
            continue
        entry = conv.input[0]
        if entry in g.graph_inputs or g.uses(entry) != 1:
            continue
        chain, current = [conv], conv.output[0]
        while g.uses(current) == 1 and current not in g.graph_outputs:
            (nxt,) = g.consumers[current]
            if nxt.op_type not in LAYER_TAIL or g.activations(nxt) != [current]:
                break
            chain.append(nxt)
            current = nxt.output[0]
        exit_ = current
        s_in, s_out = g.shapes.get(entry), g.shapes.get(exit_)
        if s_in is None or s_out is None or len(s_in) != 4 or s_in[2:] != s_out[2:] or None in s_in[1:]:
            continue
        members = _layer_members(g, chain)
        if members is None:
            continue
        block = Block(module_of_param(conv.input[1]) if len(members) > 1 else members[0], "layer", members,
                      entry, exit_, [n.name for n in chain], width_in=s_in[1], width_out=s_out[1])
        nxt = _next_conv(g, exit_)
        if nxt is None or nxt.input[1] in g.shared:
            # Channel pruning can make the input and output widths differ even when they start equal;
            # only a next conv (re-created with the new width) can absorb that.
            continue
        block.next_conv, block.next_weight = nxt.name, nxt.input[1]
        layers.append(block)
    return layers


def _layer_members(g: _Graph, chain: list[onnx.NodeProto]) -> list[str] | None:
    """Torch modules that, replaced by identity, remove exactly the chain's nodes (None if none do)."""
    chain_names = {n.name for n in chain}
    scopes = [g.scope[n.name] for n in chain]
    if not all(scopes):
        return None
    common = scopes[0].split(".")
    for scope in scopes[1:]:
        parts = scope.split(".")
        k = 0
        while k < min(len(common), len(parts)) and common[k] == parts[k]:
            k += 1
        common = common[:k]
    while common:  # one enclosing module (a ConvBNAct) is the cleanest member
        module = ".".join(common)
        if {n.name for n in g.under(module)} == chain_names:
            return [module]
        common = common[:-1]
    members = list(dict.fromkeys(scopes))
    if all({n.name for n in g.under(m)} <= chain_names for m in members):
        return members
    return None


def _next_conv(g: _Graph, tensor: str) -> onnx.NodeProto | None:
    """The conv that consumes `tensor` through single-consumer, channel-preserving ops."""
    current = tensor
    while g.uses(current) == 1 and current not in g.graph_outputs:
        (nxt,) = g.consumers[current]
        if nxt.op_type == "Conv" and nxt.input[0] == current and nxt.input[1] in g.inits:
            if all(a.name != "group" or a.i == 1 for a in nxt.attribute):
                return nxt
            return None
        if nxt.op_type not in SPATIAL_PASS:
            return None
        current = nxt.output[0]
    return None
