// Device.Order's machinery (one per device). Orders work between streams of one accelerator without draining the pipeline: after Order(first, then), work enqueued
// on `then` starts only once everything enqueued on `first` so far has finished.
//   CUDA: an event (timing off) recorded on `first` that `then` waits on (cuEventRecord + cuStreamWaitEvent), so the host
//         never blocks. One event serves every call: a wait binds to the record made just before it, and later records of
//         the same event do not move it. ILGPU 1.5.3 wraps event create/record/destroy but not cuStreamWaitEvent (CudaDriver).
//   other accelerators: the host waits for `first` (the coarsest correct order; ILGPU's CPU accelerator runs kernels and
//         copies synchronously anyway).
using ILGPU.Runtime;
using ILGPU.Runtime.Cuda;
using IlgpuTune.Kernels;
using IlgpuTune.Numerics;

namespace IlgpuTune.Core;

internal sealed class StreamOrder : IDisposable
{
    private readonly Accelerator _accelerator;
    private IntPtr _event;

    public StreamOrder(Accelerator accelerator)
    {
        _accelerator = accelerator;
        if (accelerator is not CudaAccelerator) return;
        using var bound = accelerator.BindScoped();
        CudaException.ThrowIfFailed(CudaAPI.CurrentAPI.CreateEvent(out _event, CudaEventFlags.CU_EVENT_DISABLE_TIMING));
    }

    /// <summary>Work enqueued on <paramref name="then"/> from now on waits for the work enqueued on <paramref name="first"/> so far.</summary>
    public void Order(AcceleratorStream first, AcceleratorStream then)
    {
        if (ReferenceEquals(first, then)) return; // one stream runs in order
        if (_event == IntPtr.Zero)
        {
            first.Synchronize();
            return;
        }
        using var bound = _accelerator.BindScoped();
        CudaException.ThrowIfFailed(CudaAPI.CurrentAPI.RecordEvent(_event, ((CudaStream)first).StreamPtr));
        CudaDriver.WaitEvent((CudaStream)then, _event);
    }

    public void Dispose()
    {
        if (_event == IntPtr.Zero) return;
        using var bound = _accelerator.BindScoped();
        CudaException.ThrowIfFailed(CudaAPI.CurrentAPI.DestroyEvent(_event)); // destroying a pending event is allowed
        _event = IntPtr.Zero;
    }
}
