#!/usr/bin/env python3
"""An independent float64 implementation of DESIGN.md's formula, in NumPy, used to check
`clattn run`. It shares no code with the library: scores are materialised whole and every
mask is an explicit boolean matrix."""
import sys

try:
    import numpy as np
except ImportError:  # one line, not a traceback
    sys.exit("attention64.py: python3's numpy is missing (apt-get install python3-numpy)")


def attention64_varlen(q, k, v, cu_q, cu_k, **kw):
    """Packed sequences: q (total_q, Hq, D), k/v (total_k, Hkv, D); each sequence on its own.
    Returns o (total_q, Hq, Dv) and lse (Hq, total_q), as FlashAttention's varlen API."""
    o = np.zeros((q.shape[0], q.shape[1], v.shape[2]))
    lse = np.full((q.shape[1], q.shape[0]), -np.inf)
    for b in range(len(cu_q) - 1):
        qs, ks = slice(cu_q[b], cu_q[b + 1]), slice(cu_k[b], cu_k[b + 1])
        if cu_q[b + 1] == cu_q[b]:
            continue
        if cu_k[b + 1] == cu_k[b]:  # no keys at all: o = 0, lse = -inf (or the sink)
            if kw.get("sinks") is not None:
                lse[:, qs] = np.asarray(kw["sinks"], np.float64)[:, None]
            continue
        ob, lb = attention64(q[None, qs], k[None, ks], v[None, ks], layout="bshd", **kw)
        o[qs] = ob[0]
        lse[:, qs] = lb[0]
    return o, lse


def attention64(q, k, v, layout="bhsd", causal=False, top_left=False, scale=None, window=None,
                softcap=0.0, mask=None, alibi=None, sinks=None, seqlens_k=None):
    """q (B,Hq,Nq,D) or (B,Nq,Hq,D) for bshd; returns o (same layout, float64) and lse (B,Hq,Nq)."""
    if layout == "bshd":
        q, k, v = (np.swapaxes(x, 1, 2) for x in (q, k, v))
    q, k, v = (x.astype(np.float64) for x in (q, k, v))
    B, Hq, Nq, D = q.shape
    Hkv, Nk = k.shape[1], k.shape[2]
    k = np.repeat(k, Hq // Hkv, axis=1)
    v = np.repeat(v, Hq // Hkv, axis=1)
    scale = 1.0 / np.sqrt(D) if scale is None else scale
    s = scale * np.einsum("bhid,bhjd->bhij", q, k)
    if softcap:
        s = softcap * np.tanh(s / softcap)
    klen = np.full(B, Nk) if seqlens_k is None else np.asarray(seqlens_k)
    i = np.arange(Nq)[:, None]
    j = np.arange(Nk)[None, :]
    allowed = np.zeros((B, 1, Nq, Nk), dtype=bool)
    for b in range(B):
        off = 0 if top_left else klen[b] - Nq
        ok = j < klen[b]
        if causal:
            ok = ok & (j <= i + off)
        if window is not None:
            wl, wr = window
            if wl >= 0:
                ok = ok & (j >= i + off - wl)
            if wr >= 0:
                ok = ok & (j <= i + off + wr)
        allowed[b, 0] = ok
        if alibi is not None:
            s[b] -= np.asarray(alibi, np.float64)[:, None, None] * np.abs(i + off - j)[None]
    if mask is not None:
        s = s + mask.astype(np.float64)
    s = np.where(allowed, s, -np.inf)
    m = s.max(axis=-1, keepdims=True)
    if sinks is not None:
        m = np.maximum(m, np.asarray(sinks, np.float64)[None, :, None, None])
    m_safe = np.where(np.isfinite(m), m, 0.0)
    p = np.exp(s - m_safe)
    denom = p.sum(axis=-1, keepdims=True)
    if sinks is not None:
        denom = denom + np.exp(np.asarray(sinks, np.float64)[None, :, None, None] - m_safe)
    with np.errstate(invalid="ignore", divide="ignore"):
        o = np.where(denom > 0, np.einsum("bhij,bhjd->bhid", p, v) / np.where(denom > 0, denom, 1), 0.0)
        lse = np.where(denom[..., 0] > 0, m_safe[..., 0] + np.log(np.where(denom[..., 0] > 0, denom[..., 0], 1)), -np.inf)
    if layout == "bshd":
        o = np.swapaxes(o, 1, 2)
    return o, lse
