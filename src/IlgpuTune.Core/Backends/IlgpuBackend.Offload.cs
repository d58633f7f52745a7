// Offloaded tensors on an accelerator: page-locked host buffers from a pool (cudaHostAlloc is slow, so buffers are kept
// and reused step after step) and one copy stream per direction, so the copies run under the compute. The caching
// allocator serves the default (compute) stream only, which sets the order (Order(a, b): later work on b waits for a):
//   offload t        Order(compute, down) (t was made by compute), Order(up, down) (the buffer may still feed an upload),
//                    then copy t down. t stays alive: the next offload (the next layer, ~ms later) does Order(down,
//                    compute) and frees it, so compute never reuses its memory under the copy, and never waits for it.
//   prefetch         a device tensor from the allocator, Order(compute, up) (queued kernels may still use that memory),
//                    copy up; the buffer returns to the pool (the next download into it waits, by Order(up, down)).
//   fetch            start the upload unless prefetched, Order(up, compute) before anything reads it, then prefetch the
//                    predecessor: its upload runs under this layer's backward.
// The last tensor of a pass is never freed from the device before its fetch, which then hands it back without an upload.
// ILGPU's CPU accelerator runs copies synchronously and Order waits on the host: the same plumbing, no overlap.
using ILGPU;
using ILGPU.Runtime;
using IlgpuTune.Numerics;

namespace IlgpuTune.Core;

internal sealed partial class IlgpuBackend : IDisposable
{
    private PinnedOffload? _offload;

    public IHostOffload HostOffload => _offload ??= new PinnedOffload(device);

    public void Dispose() => _offload?.Dispose();

    private sealed class PinnedOffload : IHostOffload, IDisposable
    {
        private readonly Device _device;
        private readonly AcceleratorStream _down, _up;
        private readonly List<PageLockedArray1D<byte>> _free = [];
        private bool _disposed;

        public PinnedOffload(Device device)
        {
            _device = device;
            _down = device.CreateSideStream();
            _up = device.CreateSideStream();
        }

        public long HostBytes { get; private set; }

        private AcceleratorStream Compute => _device.Accelerator!.DefaultStream;

        public IOffloaded Offload(Tensor t, IOffloaded? previous)
        {
            ObjectDisposedException.ThrowIf(_disposed, this);
            (previous as Held)?.ReleaseSource();
            var buffer = Rent(t.Bytes);
            _device.Order(Compute, _down);
            _device.Order(_up, _down);
            t.RawDeviceBytes.SubView(0, t.Bytes).CopyTo(_down, buffer.ArrayView.SubView(0, t.Bytes));
            return new Held(this, t, buffer, previous as Held);
        }

        // The smallest free buffer that fits; else a new one, dropping the largest free one that is too small, so the pool
        // never holds more buffers than were in use at once (a shorter batch reuses a longer batch's buffers).
        private PageLockedArray1D<byte> Rent(long bytes)
        {
            PageLockedArray1D<byte>? fit = null, small = null;
            foreach (var b in _free)
                if (b.Length >= bytes) { if (fit is null || b.Length < fit.Length) fit = b; }
                else if (small is null || b.Length > small.Length) small = b;
            if (fit is not null)
            {
                _free.Remove(fit);
                return fit;
            }
            if (small is not null)
            {
                _free.Remove(small);
                Free(small);
            }
            long size = CachingAllocator.RoundSize(bytes);
            var fresh = _device.Accelerator!.AllocatePageLocked1D<byte>(size, uninitialized: true);
            HostBytes += size;
            return fresh;
        }

        private void Return(PageLockedArray1D<byte> buffer)
        {
            if (_disposed) Free(buffer);
            else _free.Add(buffer);
        }

        // A copy may still use the buffer: both copy streams finish first (rare: the pool only shrinks when batches grow).
        private void Free(PageLockedArray1D<byte> buffer)
        {
            _down.Synchronize();
            _up.Synchronize();
            HostBytes -= buffer.Length;
            buffer.Dispose();
        }

        public void Dispose()
        {
            if (_disposed) return;
            _device.Synchronize(); // the whole context: copies on both streams may still run
            foreach (var b in _free) Free(b);
            _free.Clear();
            _disposed = true;
            _down.Dispose();
            _up.Dispose();
        }

        // One offloaded tensor: on the device (source) until the next offload, in its pinned buffer until its upload starts,
        // then on the device again (back) until disposed.
        private sealed class Held(PinnedOffload pool, Tensor source, PageLockedArray1D<byte> buffer, Held? previous) : IOffloaded
        {
            private readonly DType _dtype = source.DType;
            private readonly int[] _shape = source.Shape;
            private Tensor? _source = source;
            private PageLockedArray1D<byte>? _buffer = buffer;
            private Tensor? _back;

            private Device Device => pool._device;

            // Frees the device copy: compute from now on waits for the download (long done by the next layer's offload).
            public void ReleaseSource()
            {
                if (_source is null) return;
                if (!pool._disposed) Device.Order(pool._down, pool.Compute);
                _source.Dispose();
                _source = null;
            }

            // Starts the upload into a fresh device tensor, once.
            public void Prefetch()
            {
                if (_source is not null || _back is not null || _buffer is null || pool._disposed) return;
                var back = Tensor.Empty(Device, _dtype, _shape);
                Device.Order(pool.Compute, pool._up);
                _buffer.ArrayView.SubView(0, back.Bytes).CopyTo(pool._up, back.RawDeviceBytes.SubView(0, back.Bytes));
                pool.Return(_buffer);
                _buffer = null;
                _back = back;
            }

            public Tensor Fetch()
            {
                ObjectDisposedException.ThrowIf(_source is null && _back is null && _buffer is null, this);
                Tensor result;
                if (_source is not null) result = _source.Alias();
                else
                {
                    Prefetch();
                    Device.Order(pool._up, pool.Compute);
                    result = _back!.Alias();
                }
                previous?.Prefetch();
                return result;
            }

            public void Dispose()
            {
                ReleaseSource();
                if (_back is not null)
                {
                    if (!pool._disposed) Device.Order(pool._up, pool.Compute); // an unfetched prefetch may still be writing it
                    _back.Dispose();
                    _back = null;
                }
                if (_buffer is not null)
                {
                    pool.Return(_buffer);
                    _buffer = null;
                }
            }
        }
    }
}
