// Handing device tensors to host memory and back (IOpBackend.HostOffload): gradient checkpointing's saved layer inputs
// wait in page-locked host memory from the forward pass until their layer's backward, instead of in device memory.
// A pass offloads in layer order through one OffloadChain, so each handle knows the one offloaded before it: the one
// whose backward runs next, whose upload a backend starts as soon as this one is fetched (prefetch).
namespace IlgpuTune.Core;

/// <summary>A tensor handed to host memory; <see cref="Fetch"/> brings it back. Disposing it frees what it holds.</summary>
public interface IOffloaded : IDisposable
{
    /// <summary>The tensor on the device again (the caller disposes it), bitwise as offloaded; it may be fetched again.</summary>
    Tensor Fetch();
}

/// <summary>A backend's way to keep device tensors in host memory until they are needed again.</summary>
public interface IHostOffload
{
    /// <summary>
    /// Starts copying <paramref name="t"/> (taken over) to host memory. <paramref name="previous"/>: the handle offloaded
    /// just before in the same pass, fetched right after this one (so fetching this one may start its upload).
    /// </summary>
    IOffloaded Offload(Tensor t, IOffloaded? previous);

    /// <summary>Host memory held for offloaded tensors now (page-locked buffers, reused across steps).</summary>
    long HostBytes { get; }
}

/// <summary>One forward pass's offloads, in order: each is told its predecessor (see <see cref="IHostOffload.Offload"/>).</summary>
public sealed class OffloadChain(IHostOffload host)
{
    private IOffloaded? _last;

    /// <summary>Hands <paramref name="t"/> (taken over) to the host.</summary>
    public IOffloaded Offload(Tensor t) => _last = host.Offload(t, _last);
}
