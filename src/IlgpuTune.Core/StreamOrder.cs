// Device.Order's machinery (one per device). Orders work between streams of one accelerator without draining the pipeline: after Order(first, then), work enqueued
// on `then` starts only once everything enqueued on `first` so far has finished.
//   CUDA: one StreamFence (an event, timing off) recorded on `first` that `then` waits on (cuEventRecord +
//         cuStreamWaitEvent), so the host never blocks. One event serves every call: a wait binds to the record made just
//         before it, and later records of the same event do not move it. ILGPU 1.5.3 wraps event create/record/destroy but
//         not cuStreamWaitEvent (CudaDriver).
//   other accelerators: the host waits for `first` (the coarsest correct order; ILGPU's CPU accelerator runs kernels and
//         copies synchronously anyway).
using ILGPU.Runtime;
using ILGPU.Runtime.Cuda;
using IlgpuTune.Kernels;
using IlgpuTune.Numerics;

namespace IlgpuTune.Core;

internal sealed class StreamOrder(Accelerator accelerator) : IDisposable
{
    private readonly StreamFence _fence = new(accelerator);

    /// <summary>Work enqueued on <paramref name="then"/> from now on waits for the work enqueued on <paramref name="first"/> so far.</summary>
    public void Order(AcceleratorStream first, AcceleratorStream then)
    {
        if (ReferenceEquals(first, then)) return; // one stream runs in order
        _fence.Record(first);
        _fence.Wait(then);
    }

    public void Dispose() => _fence.Dispose(); // destroying a pending event is allowed
}

/// <summary>
/// A point in one stream's work that later work elsewhere waits for: its own CUDA event, so fences recorded one after another
/// stay distinct (StreamOrder's single event binds each wait at once). Elsewhere recording waits on the host (ILGPU's CPU
/// accelerator runs everything synchronously anyway) and waiting is free.
/// </summary>
internal sealed class StreamFence : IDisposable
{
    private readonly Accelerator _accelerator;
    private IntPtr _event;

    public StreamFence(Accelerator accelerator)
    {
        _accelerator = accelerator;
        if (accelerator is not CudaAccelerator) return;
        using var bound = accelerator.BindScoped();
        CudaException.ThrowIfFailed(CudaAPI.CurrentAPI.CreateEvent(out _event, CudaEventFlags.CU_EVENT_DISABLE_TIMING));
    }

    /// <summary>Marks the work enqueued on <paramref name="stream"/> so far (a later record moves the mark).</summary>
    public void Record(AcceleratorStream stream)
    {
        if (_event == IntPtr.Zero)
        {
            stream.Synchronize();
            return;
        }
        using var bound = _accelerator.BindScoped();
        CudaException.ThrowIfFailed(CudaAPI.CurrentAPI.RecordEvent(_event, ((CudaStream)stream).StreamPtr));
    }

    /// <summary>Work enqueued on <paramref name="stream"/> from now on waits for the last <see cref="Record"/>.</summary>
    public void Wait(AcceleratorStream stream)
    {
        if (_event == IntPtr.Zero) return;
        using var bound = _accelerator.BindScoped();
        CudaDriver.WaitEvent((CudaStream)stream, _event);
    }

    /// <summary>Work on the accelerator's default stream waits for the last <see cref="Record"/>.</summary>
    public void WaitOnDefault() => Wait(_accelerator.DefaultStream);

    public void Dispose()
    {
        if (_event == IntPtr.Zero) return;
        using var bound = _accelerator.BindScoped();
        CudaException.ThrowIfFailed(CudaAPI.CurrentAPI.DestroyEvent(_event));
        _event = IntPtr.Zero;
    }
}

/// <summary>
/// A write to a tensor on another stream: the fence to wait for, what the writer still reads (released once the default stream
/// is ordered after it, so the caching allocator hands that memory out again only behind the write), and what enqueues the
/// write if the host has not yet (a lazily enqueued optimizer step).
/// </summary>
internal sealed class PendingWrite(StreamFence fence, IDisposable? reads, Action? enqueue = null)
{
    private IDisposable? _reads = reads;

    /// <summary>Work on the default stream from now on runs after the write; the write's inputs are released.</summary>
    public void Settle()
    {
        enqueue?.Invoke();
        fence.WaitOnDefault();
        _reads?.Dispose();
        _reads = null;
    }
}
