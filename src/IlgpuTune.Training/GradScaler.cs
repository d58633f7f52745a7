// Dynamic loss scaling exactly as torch.amp.GradScaler for one optimizer (formats.md §6.2), in mmengine's order per
// optimizer step: backward on loss*Scale -> Unscale -> clip -> Step -> Update.
//   Unscale: inv = float32(1 / double(scale)); every grad *= inv; found_inf = any grad non-finite before scaling.
//   Step:    unscales first if Unscale was not called; skips optimizer.Step() when found_inf.
//   Update:  found_inf: scale = float32(scale * backoff), tracker = 0;
//            else tracker += 1 and at growth_interval: scale = float32(scale * growth) if that is finite, tracker = 0.
// Disabled, it is a pass-through with scale 1 (fp32 / bf16 training).
namespace IlgpuTune.Training;

/// <summary>GradScaler state as torch's state_dict holds it.</summary>
public sealed record GradScalerState(float Scale, double GrowthFactor, double BackoffFactor, int GrowthInterval, int GrowthTracker);

public sealed class GradScaler
{
    private bool? _foundInf; // set by Unscale, cleared by Update (torch's per-optimizer "stage")
    private bool _stepped;

    public GradScaler(double initScale = 65536.0, double growthFactor = 2.0, double backoffFactor = 0.5, int growthInterval = 2000,
        bool enabled = true)
    {
        if (!(growthFactor > 1)) throw new ArgumentOutOfRangeException(nameof(growthFactor), growthFactor, "growth_factor should be > 1");
        if (!(backoffFactor < 1)) throw new ArgumentOutOfRangeException(nameof(backoffFactor), backoffFactor, "backoff_factor should be < 1");
        if (growthInterval <= 0) throw new ArgumentOutOfRangeException(nameof(growthInterval), growthInterval, "growth_interval should be > 0");
        Enabled = enabled;
        Scale = enabled ? (float)initScale : 1f;
        GrowthFactor = growthFactor;
        BackoffFactor = backoffFactor;
        GrowthInterval = growthInterval;
    }

    public bool Enabled { get; }

    /// <summary>The factor the loss is multiplied by before backward (seed Tape.Backward with it); 1 when disabled.</summary>
    public float Scale { get; private set; }

    public double GrowthFactor { get; private set; }
    public double BackoffFactor { get; private set; }
    public int GrowthInterval { get; private set; }

    /// <summary>Consecutive finite steps since the scale last changed.</summary>
    public int GrowthTracker { get; private set; }

    /// <summary>Divides the optimizer's gradients by the scale in place; returns whether any was inf or NaN.</summary>
    public bool Unscale(AdamW optimizer)
    {
        if (!Enabled) return false;
        if (_foundInf.HasValue) throw new InvalidOperationException("Unscale has already been called on this optimizer since the last Update");
        if (_stepped) throw new InvalidOperationException("Unscale is being called after Step");
        float inv = (float)(1.0 / Scale);
        bool found = GradOps.MultiplyAndCheck(GradOps.Collect(optimizer.Parameters), inv);
        _foundInf = found;
        return found;
    }

    /// <summary>Unscales if needed, then runs optimizer.Step() unless a gradient was non-finite; returns whether it stepped.</summary>
    public bool Step(AdamW optimizer)
    {
        if (!Enabled)
        {
            optimizer.Step();
            return true;
        }
        if (_stepped) throw new InvalidOperationException("Step has already been called since the last Update");
        bool found = _foundInf ?? Unscale(optimizer);
        _stepped = true;
        if (found) return false;
        optimizer.Step();
        return true;
    }

    /// <summary>Adjusts the scale from this step's inf check (torch's _amp_update_scale_).</summary>
    public void Update()
    {
        if (!Enabled) return;
        if (_foundInf is not { } found) throw new InvalidOperationException("No inf checks were recorded prior to Update");
        if (found)
        {
            Scale = (float)(Scale * BackoffFactor);
            GrowthTracker = 0;
        }
        else if (GrowthTracker + 1 == GrowthInterval)
        {
            float grown = (float)(Scale * GrowthFactor);
            if (float.IsFinite(grown)) Scale = grown;
            GrowthTracker = 0;
        }
        else GrowthTracker++;
        _foundInf = null;
        _stepped = false;
    }

    public GradScalerState ExportState() => new(Scale, GrowthFactor, BackoffFactor, GrowthInterval, GrowthTracker);

    public void LoadState(GradScalerState state)
    {
        if (!(state.Scale > 0) || !float.IsFinite(state.Scale)) throw new ArgumentException($"GradScaler state has scale {state.Scale}");
        if (state.GrowthTracker < 0) throw new ArgumentException($"GradScaler state has growth tracker {state.GrowthTracker}");
        Scale = state.Scale;
        GrowthFactor = state.GrowthFactor;
        BackoffFactor = state.BackoffFactor;
        GrowthInterval = state.GrowthInterval;
        GrowthTracker = state.GrowthTracker;
        _foundInf = null;
        _stepped = false;
    }
}
