"""ESRT: Transformer for Single Image Super-Resolution (Lu et al., CVPRW 2022), the Efficient SR Transformer.

A 3x3 head, ``n_blocks`` bodies (``Un``) each of three high-preserving blocks (``Updownblock``: an encoder,
a 1/2 average-pooled branch refined five times by one shared block and enlarged back bilinearly
(``align_corners=True``), a high-frequency branch, channel attention) and one efficient transformer over
3x3 patch tokens (9·``n_feats`` wide; the efficient multi-head attention halves the width, then attends
inside the 4 consecutive quarters of the token sequence), a 3x3 conv merging the bodies, and two
pixel-shuffle heads (``tail`` and ``up``, the latter on the head's features, closed by a bias-free conv +
ReLU) added together.

Key names are the official ``model/esrt.py`` / ``util/transformer.py`` ones, so released ``.pth`` files
load unchanged with strict key checking: ``head.0``, ``body.{i}.encoder{1,2,3}.{encoder, decoder_low,
decoder_high, alise}.{layer1, layer2}.{conv, conv1, relu, weight1, weight2}``, ``...{layer4, alise}.conv``,
``...atten.conv_du.{0,2}``, ``...weight{1..5}.scale``, ``body.{i}.encoder{k}.{alise2.conv, att.conv_du}``,
``body.{i}.{reduce, alise, weight1, weight2}``, ``body.{i}.attention.{atten.{reduce, qkv, proj}, norm1,
mlp.{fc1, fc2}, norm2}``, ``reduce``, ``tail.0.{0,2}``, ``tail.1``, ``up.0.{0,2}``, ``up.1.conv``.

Value range: the official network computes on [0, 1] without a mean; so does this one.

Rewrites (equal math, every target takes them): the 3x3 "same" patch extraction (``nn.Unfold``) and its
inverse sum (``nn.Fold``) are grouped convolutions with fixed one-hot kernels (:class:`PatchUnfold`,
:class:`PatchFold`); the chunked attention (:func:`chunked_attention`) runs the equal chunks as one batched
attention and the remainder chunk (fewer than ``parts`` tokens) on the last ``parts`` tokens with the others
masked (an additive mask: CoreML takes no ``where`` with a scalar), so a graph exported for a range of sizes
needs no data-dependent split. Checked against PyTorch (fp32, max abs diff <= 1e-4) on a tiny
configuration: ONNX, ExecuTorch and PT2 over a range of sizes (sides of 4 and up), CoreML and TFLite at a
fixed size.

Also here, shared with LBNet (``edge_sr.models.lbnet``): :class:`Scale`, :class:`ChannelAttention`,
:class:`PatchUnfold`, :class:`PatchFold`, :class:`EfficientTransformer`, :func:`chunked_attention`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from edge_sr.errors import ConfigError
from edge_sr.models.detect import Detection, StateDict, has, indices, register_detector, shape
from edge_sr.models.edsr import Upsampler, check_scale, pixelshuffle_scale
from edge_sr.models.registry import register_model

__all__ = [
    "ESRT",
    "ChannelAttention",
    "EfficientTransformer",
    "PatchFold",
    "PatchUnfold",
    "Scale",
    "check_tokens",
    "chunked_attention",
    "esrt",
]

_MASKED = -1e4  # a score whose softmax weight is exactly 0 in float32 next to any real score
_PARTS = 4  # ESRT's attention splits the token sequence into quarters
_REDUCTION = 16  # channel-attention squeeze
_DECODER_STEPS = 5  # the shared low-resolution block runs five times


class Scale(nn.Module):
    """A learned scalar factor (key ``scale``, one element)."""

    def __init__(self, value: float = 1.0) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.tensor([value]))

    def forward(self, x: Tensor) -> Tensor:
        return x * self.scale


class ChannelAttention(nn.Module):
    """``x * sigmoid(up(relu(down(mean(x)))))`` per channel (official ``CALayer``; keys ``conv_du.{0,2}``)."""

    def __init__(self, channels: int, reduction: int = _REDUCTION) -> None:
        super().__init__()
        if channels // reduction < 1:
            raise ConfigError(
                None,
                f"channel attention over {channels} channels needs at least {reduction} (it squeezes by it)",
            )
        self.conv_du = nn.Sequential(
            nn.Conv2d(channels, channels // reduction, 1),
            nn.ReLU(),
            nn.Conv2d(channels // reduction, channels, 1),
            nn.Sigmoid(),
        )

    def forward(self, x: Tensor) -> Tensor:
        return x * self.conv_du(x.mean(dim=(2, 3), keepdim=True))


class PatchUnfold(nn.Module):
    """(N, C, H, W) -> (N, H·W, 9C): the zero-padded 3x3 neighbourhood of every pixel as a token.

    Equal to the official ``extract_image_patches(x, [3, 3], [1, 1], [1, 1], "same")`` (``nn.Unfold`` on the
    zero-padded map), permuted to tokens: token feature ``c·9 + 3·i + j`` is ``x[c, y + i - 1, x + j - 1]``.
    Computed as a grouped 3x3 conv whose kernel picks one tap per output channel (a non-persistent buffer).
    """

    weight: Tensor  # (9C, 1, 3, 3)

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.channels = channels
        taps = torch.eye(9).reshape(9, 1, 3, 3).repeat(channels, 1, 1, 1)
        self.register_buffer("weight", taps, persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        y = F.conv2d(x, self.weight.to(x.dtype), padding=1, groups=self.channels)  # (N, 9C, H, W)
        return y.flatten(2).transpose(1, 2)


class PatchFold(nn.Module):
    """(N, H·W, 9C) tokens -> (N, C, H, W): every token's 3x3 patch added back where it came from.

    Equal to the official ``reverse_patches(t.permute(0, 2, 1), (h, w), (3, 3), 1, 1)`` (``nn.Fold``, the
    adjoint of :class:`PatchUnfold`): ``out[c, y, x] = Σ_ij t[(y - i + 1, x - j + 1), c·9 + 3·i + j]`` over
    the tokens inside the map. Computed as a grouped 3x3 conv with the flipped one-hot kernel.
    """

    weight: Tensor  # (C, 9, 3, 3)

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.channels = channels
        taps = torch.eye(9).reshape(1, 9, 3, 3).flip(2, 3).repeat(channels, 1, 1, 1)
        self.register_buffer("weight", taps, persistent=False)

    def forward(self, tokens: Tensor, h: int, w: int) -> Tensor:
        b, _, c9 = tokens.shape
        cols = tokens.transpose(1, 2).reshape(b, c9, h, w)
        return F.conv2d(cols, self.weight.to(tokens.dtype), padding=1, groups=self.channels)


def check_tokens(h: int, w: int, parts: int, name: str) -> None:
    """``ConfigError`` when an (h, w) map has fewer tokens than the attention has chunks."""
    if h * w < parts:
        raise ConfigError(
            None,
            f"{name}: input {h}x{w} is too small; its attention splits the {h * w} pixels into {parts} chunks "
            f"and needs at least {parts}",
        )


def _split_attention(q: Tensor, k: Tensor, v: Tensor, size: int, scale: float) -> Tensor:
    """The official loop: attention inside consecutive chunks of ``size`` tokens (the last may be shorter)."""
    outs = []
    for qc, kc, vc in zip(q.split(size, dim=2), k.split(size, dim=2), v.split(size, dim=2), strict=True):
        outs.append(((qc @ kc.transpose(-2, -1)) * scale).softmax(dim=-1) @ vc)
    return torch.cat(outs, dim=2)


def chunked_attention(q: Tensor, k: Tensor, v: Tensor, parts: int, scale: float) -> Tensor:
    """Softmax attention inside consecutive chunks of ``N // parts`` tokens: (B, heads, N, d) -> same.

    The official code splits the sequence with ``torch.split(t, N // parts)``: ``parts`` chunks of
    ``s = N // parts`` tokens and, when ``parts`` does not divide N, one more of ``r = N mod parts`` tokens
    (when ``s >= parts``). Here the equal chunks are one batched attention and the remainder is attended on
    the last ``parts`` tokens with the keys before it masked; the outputs are gathered back in order. No
    size is data-dependent, so one exported graph serves every size with ``N >= parts²``; smaller maps
    (eager only) take the official loop, which has more chunks then.
    """
    b, heads, n, d = q.shape
    s = n // parts
    if not torch.compiler.is_compiling() and s < parts:
        return _split_attention(q, k, v, max(int(s), 1), scale)
    torch._check(s >= parts)  # proven for every size of an exported range (convert.dynamic)
    m = parts * s

    def chunks(t: Tensor) -> Tensor:
        return t[:, :, :m].reshape(b, heads, parts, s, d)

    main = ((chunks(q) @ chunks(k).transpose(-2, -1)) * scale).softmax(dim=-1) @ chunks(v)
    main = main.reshape(b, heads, m, d)
    # the remainder chunk (r = n - m < parts tokens) inside the last `parts` tokens: keys before it masked
    qt, kt, vt = q[:, :, n - parts :], k[:, :, n - parts :], v[:, :, n - parts :]
    # an additive mask (not `where`, which CoreML does not take with a scalar): _MASKED on the keys before it
    before = (torch.arange(parts, device=q.device) < parts - (n - m)).to(q.dtype)  # (parts,) over the keys
    scores = (qt @ kt.transpose(-2, -1)) * scale + before * _MASKED
    tail = scores.softmax(dim=-1) @ vt  # (B, heads, parts, d); rows before the remainder are discarded
    both = torch.cat([main, tail], dim=2)  # (B, heads, m + parts, d)
    t = torch.arange(n, device=q.device)
    return both.index_select(2, t + (t >= m).to(t.dtype) * (m + parts - n))


class EfficientAttention(nn.Module):
    """Efficient multi-head attention (official ``EffAttention``; keys ``reduce``, ``qkv``, ``proj``).

    (B, N, dim) -> ``reduce`` to ``dim // reduction`` -> q, k, v (``num_heads`` heads, no biases) ->
    :func:`chunked_attention` -> ``proj`` back to ``dim``. The score scale is ``(dim // num_heads)^-0.5``,
    the head width before the reduction, as officially.
    """

    def __init__(self, *, dim: int, num_heads: int, reduction: int, parts: int) -> None:
        super().__init__()
        width = dim // reduction
        if width % num_heads:
            raise ConfigError(
                None,
                f"attention width {width} (dim {dim} / {reduction}) is not divisible by num_heads {num_heads}",
            )
        self.num_heads, self.parts = num_heads, parts
        self.scale = (dim // num_heads) ** -0.5
        self.reduce = nn.Linear(dim, width, bias=False)
        self.qkv = nn.Linear(width, 3 * width, bias=False)
        self.proj = nn.Linear(width, dim)

    def forward(self, x: Tensor) -> Tensor:
        x = self.reduce(x)
        b, n, c = x.shape
        qkv = self.qkv(x).reshape(b, n, 3, self.num_heads, c // self.num_heads).permute(2, 0, 3, 1, 4)
        out = chunked_attention(qkv[0], qkv[1], qkv[2], self.parts, self.scale)  # (B, heads, N, d)
        return self.proj(out.transpose(1, 2).reshape(b, n, c))


class TokenMlp(nn.Module):
    """Linear -> ReLU -> Linear with a quarter-width hidden layer (keys ``fc1``, ``fc2``)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, dim // 4)
        self.act = nn.ReLU()
        self.fc2 = nn.Linear(dim // 4, dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(self.act(self.fc1(x)))


class EfficientTransformer(nn.Module):
    """Pre-norm transformer block on (B, N, dim) tokens (ESRT's ``MLABlock``, LBNet's ``TransBlock``; keys
    ``atten``, ``norm1``, ``mlp``, ``norm2``)."""

    def __init__(self, *, dim: int, num_heads: int, reduction: int, parts: int) -> None:
        super().__init__()
        self.atten = EfficientAttention(dim=dim, num_heads=num_heads, reduction=reduction, parts=parts)
        self.norm1 = nn.LayerNorm(dim)
        self.mlp = TokenMlp(dim)
        self.norm2 = nn.LayerNorm(dim)

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.atten(self.norm1(x))
        return x + self.mlp(self.norm2(x))


# ---- ESRT's convolutional blocks


class ConvReLU(nn.Module):
    """A bias-free conv + ReLU (official ``BasicConv``; key ``conv``)."""

    def __init__(self, cin: int, cout: int, kernel: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, kernel, padding=kernel // 2, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        return F.relu(self.conv(x))


class OneConv(nn.Module):
    """``weight1·x + weight2·conv1(prelu(conv(x)))`` (official ``one_conv``)."""

    def __init__(self, channels: int, growth: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, growth, 3, padding=1)
        self.conv1 = nn.Conv2d(growth, channels, 3, padding=1)
        self.relu = nn.PReLU(growth)
        self.weight1 = Scale()
        self.weight2 = Scale()

    def forward(self, x: Tensor) -> Tensor:
        return self.weight1(x) + self.weight2(self.conv1(self.relu(self.conv(x))))


class OneModule(nn.Module):
    """Two :class:`OneConv`, their outputs merged (1x1 + ReLU), channel attention, 3x3 + ReLU, weighted skip
    (official ``one_module``; its ``weight1`` is stored but unused, as officially)."""

    def __init__(self, n_feats: int) -> None:
        super().__init__()
        self.layer1 = OneConv(n_feats, n_feats // 2)
        self.layer2 = OneConv(n_feats, n_feats // 2)
        self.layer4 = ConvReLU(n_feats, n_feats, 3)
        self.alise = ConvReLU(2 * n_feats, n_feats, 1)
        self.atten = ChannelAttention(n_feats)
        self.weight1 = Scale()
        self.weight2 = Scale()
        self.weight3 = Scale()
        self.weight4 = Scale()
        self.weight5 = Scale()

    def forward(self, x: Tensor) -> Tensor:
        x1 = self.layer1(x)
        x2 = self.layer2(x1)
        merged = self.alise(torch.cat([self.weight2(x2), self.weight3(x1)], dim=1))
        return self.weight4(x) + self.weight5(self.layer4(self.atten(merged)))


class HighPreservingBlock(nn.Module):
    """Official ``Updownblock``: (N, C, H, W) -> (N, C, H, W).

    ``x1 = encoder(x)``; a half-size branch ``avg_pool2(x1)`` refined five times by ``decoder_low`` and
    enlarged back; the high frequencies ``x1 - enlarge(avg_pool2(x1))`` refined by ``decoder_high``; both
    concatenated, merged (1x1 + ReLU), channel attention, ``alise``, plus ``x``. Enlarging is bilinear with
    ``align_corners=True`` to the input's size (odd sizes pool to the floor, as ``nn.AvgPool2d(2)``).
    """

    def __init__(self, n_feats: int) -> None:
        super().__init__()
        self.encoder = OneModule(n_feats)
        self.decoder_low = OneModule(n_feats)
        self.decoder_high = OneModule(n_feats)
        self.alise = OneModule(n_feats)
        self.alise2 = ConvReLU(2 * n_feats, n_feats, 1)
        self.att = ChannelAttention(n_feats)

    def forward(self, x: Tensor) -> Tensor:
        size = (x.shape[-2], x.shape[-1])
        x1 = self.encoder(x)
        low = F.avg_pool2d(x1, 2)
        high = x1 - F.interpolate(low, size=size, mode="bilinear", align_corners=True)
        for _ in range(_DECODER_STEPS):
            low = self.decoder_low(low)
        low = F.interpolate(low, size=size, mode="bilinear", align_corners=True)
        merged = self.alise2(torch.cat([low, self.decoder_high(high)], dim=1))
        return self.alise(self.att(merged)) + x


class ESRTBody(nn.Module):
    """Official ``Un``: three :class:`HighPreservingBlock`, their outputs merged by a 3x3 conv, the efficient
    transformer over its 3x3 patch tokens, folded back, a 3x3 conv, and a weighted skip."""

    def __init__(self, n_feats: int, num_heads: int) -> None:
        super().__init__()
        self.encoder1 = HighPreservingBlock(n_feats)
        self.encoder2 = HighPreservingBlock(n_feats)
        self.encoder3 = HighPreservingBlock(n_feats)
        self.reduce = nn.Conv2d(3 * n_feats, n_feats, 3, padding=1)
        self.weight2 = Scale()
        self.weight1 = Scale()
        self.attention = EfficientTransformer(dim=9 * n_feats, num_heads=num_heads, reduction=2, parts=_PARTS)
        self.alise = nn.Conv2d(n_feats, n_feats, 3, padding=1)
        self.unfold = PatchUnfold(n_feats)
        self.fold = PatchFold(n_feats)

    def forward(self, x: Tensor) -> Tensor:
        h, w = x.shape[-2], x.shape[-1]
        x1 = self.encoder1(x)
        x2 = self.encoder2(x1)
        x3 = self.encoder3(x2)
        tokens = self.attention(self.unfold(self.reduce(torch.cat([x1, x2, x3], dim=1))))
        return self.weight1(x) + self.weight2(self.alise(self.fold(tokens, h, w)))


class ESRT(nn.Module):
    """ESRT. (N, 3, H, W) in [0, 1] -> (N, 3, H·scale, W·scale).

    Args:
        scale: upscaling factor (2, 3 or 4).
        n_feats: feature channels (32 officially; at least 16 for the channel attention's squeeze; the
            transformer is 9·n_feats wide).
        n_blocks: transformer bodies (1 officially).
        num_heads: attention heads (8 officially; the weights do not tell).

    Raises:
        ConfigError: a scale other than 2, 3, 4; ``n_feats`` below 16 or odd; no body; heads that do not
            divide the attention width ``9·n_feats / 2``.
    """

    def __init__(self, *, scale: int = 4, n_feats: int = 32, n_blocks: int = 1, num_heads: int = 8) -> None:
        super().__init__()
        check_scale(scale)
        if n_feats % 2:
            raise ConfigError(None, f"ESRT n_feats {n_feats} must be even (its blocks grow by n_feats / 2)")
        if n_blocks < 1:
            raise ConfigError(None, f"ESRT n_blocks {n_blocks} must be at least 1")
        self.scale, self.n_blocks = scale, n_blocks
        self.head = nn.Sequential(nn.Conv2d(3, n_feats, 3, padding=1))
        self.body = nn.Sequential(*[ESRTBody(n_feats, num_heads) for _ in range(n_blocks)])
        self.tail = nn.Sequential(Upsampler(scale, n_feats), nn.Conv2d(n_feats, 3, 3, padding=1))
        self.up = nn.Sequential(Upsampler(scale, n_feats), ConvReLU(n_feats, 3, 3))
        self.reduce = nn.Conv2d(n_blocks * n_feats, n_feats, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        if not torch.compiler.is_compiling():
            h, w = int(x.shape[-2]), int(x.shape[-1])
            if h < 2 or w < 2:
                raise ConfigError(
                    None, f"esrt: input {h}x{w} is too small; it pools by 2 and needs 2x2 or more"
                )
            check_tokens(h, w, _PARTS, "esrt")
        feat = self.head(x)
        outs = []
        y = feat
        for block in self.body:
            y = block(y)
            outs.append(y)
        return self.tail(self.reduce(torch.cat(outs, dim=1))) + self.up(feat)


@register_model(family="esrt", kind="heavy")
def esrt(**overrides) -> ESRT:
    """ESRT: 32 features, one transformer body, 8 heads (751K parameters at x4, 677K at x2, 770K at x3)."""
    return ESRT(**{"n_feats": 32, "n_blocks": 1, "num_heads": 8, **overrides})


# ---- detection


@register_detector("esrt")
def _detect(state: StateDict) -> Detection | None:
    """ESRT from the official key layout (the bodies' high-preserving blocks and the two upsampling heads)."""
    if not has(
        state,
        "head.0.weight",
        "body.0.encoder1.encoder.layer1.conv.weight",
        "body.0.attention.atten.reduce.weight",
        "reduce.weight",
        "tail.1.weight",
        "up.1.conv.weight",
    ):
        return None
    head = shape(state, "head.0.weight")
    if head is None or len(head) != 4 or head[1] != 3:
        return None
    n_feats = head[0]
    blocks = indices(state, "body.")
    if blocks != list(range(len(blocks))):
        return None
    up = pixelshuffle_scale(state, "tail.0")
    if up is None or up[1] != n_feats:
        return None
    args = {"scale": up[0], "n_feats": n_feats, "n_blocks": len(blocks), "num_heads": 8}
    assumed = {"num_heads": "not stored in the weights; 8, the official ESRT's"}
    return Detection("esrt", args, assumed=assumed)
