"""Hub key layout of MoE checkpoints, shared by make_tiny_models.py and tools/compat/check_compat.py."""


def moe_to_hub(arch, tensors, h):
    """transformers-5 in-memory MoE names (experts fused: gate_up_proj [E, 2I, H] = gate rows then up rows, down_proj
    [E, H, I]) -> the per-expert keys of hub checkpoints: Mixtral `block_sparse_moe.experts.e.w1/w3/w2` (gate/up/down)
    and `block_sparse_moe.gate`; Qwen3-MoE `mlp.experts.e.gate_proj/up_proj/down_proj` and `mlp.gate`. Names already
    per-expert pass through. h: hidden_size (tells the two fused orientations apart)."""
    names = {"mixtral": ("block_sparse_moe.", "w1", "w3", "w2"), "qwen3_moe": ("mlp.", "gate_proj", "up_proj", "down_proj")}
    pre, gname, uname, dname = names[arch]
    out = {}
    for name, t in tensors.items():
        if name.endswith("mlp.experts.gate_up_proj"):
            base = name[: -len("mlp.experts.gate_up_proj")]
            if t.shape[2] == h:  # [E, 2I, H]
                i = t.shape[1] // 2
                gate, up = t[:, :i, :], t[:, i:, :]
            else:  # [E, H, 2I]
                i = t.shape[2] // 2
                gate, up = t[:, :, :i].transpose(1, 2), t[:, :, i:].transpose(1, 2)
            for e in range(t.shape[0]):
                out[f"{base}{pre}experts.{e}.{gname}.weight"] = gate[e].contiguous()
                out[f"{base}{pre}experts.{e}.{uname}.weight"] = up[e].contiguous()
        elif name.endswith("mlp.experts.down_proj"):
            base = name[: -len("mlp.experts.down_proj")]
            for e in range(t.shape[0]):
                d = t[e] if t.shape[1] == h else t[e].T  # [H, I]
                out[f"{base}{pre}experts.{e}.{dname}.weight"] = d.contiguous()
        elif arch == "mixtral" and ".mlp.gate." in name:
            out[name.replace(".mlp.gate.", ".block_sparse_moe.gate.")] = t.contiguous()
        else:
            out[name] = t.contiguous()
    return out
