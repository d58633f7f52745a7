// AdamW's flat state on an accelerator: device buffers updated by the multi-tensor kernel (one launch per 8 tensors of
// equal step), or, paged, page-locked host memory streamed through the device in chunks of at most pagedChunkElements
// state elements (a parameter may span chunks: the update is elementwise, so the pieces give bitwise the same result).
// Three staging slots in a ring and two copy streams of their own overlap, while chunk j is updated on the update stream,
// the upload of chunk j+1 with the download of chunk j-1 (PCIe copies both ways at once; the copies, not the kernel,
// bound this path). The paged update runs beside the default stream: it waits for the gradients, and each parameter
// carries a fence that the next launch reading it waits for, so the PCIe traffic hides under the next forward pass
// (layer by layer, as that pass reaches each parameter). See PagedAdamWState.Step for the ordering.
using ILGPU;
using ILGPU.Runtime;
using IlgpuTune.Kernels;
using AdamWKernels = IlgpuTune.Kernels.AdamW;
using IlgpuTune.Numerics;

namespace IlgpuTune.Core;

internal sealed partial class IlgpuBackend
{
    public IAdamWState CreateAdamWState(long total, bool paged, long pagedChunkElements) =>
        paged ? new PagedAdamWState(device, total, pagedChunkElements) : new DeviceAdamWState(device, total);

    private sealed class DeviceAdamWState : IAdamWState
    {
        private readonly Device _device;
        private readonly long _total;
        private readonly MemoryBuffer1D<float, Stride1D.Dense> _avg, _avgSq;
        private readonly long _bytes;

        public DeviceAdamWState(Device device, long total)
        {
            (_device, _total) = (device, total);
            var acc = device.Accelerator!;
            _avg = acc.Allocate1D<float>(Math.Max(total, 1));
            _avgSq = acc.Allocate1D<float>(Math.Max(total, 1));
            _avg.MemSetToZero();
            _avgSq.MemSetToZero();
            _bytes = _avg.LengthInBytes + _avgSq.LengthInBytes;
            device.Allocator.TrackExternal(_bytes); // the reported peak includes the optimizer's share
        }

        public bool IsPaged => false;

        public void Step(IReadOnlyList<AdamWGroup> groups)
        {
            foreach (var (hyper, members) in groups)
                AdamWKernels.StepMulti(_device.RequireKernels(), members.Select(m => new AdamWTensor(m.Param.F32View, m.Param.Grad!.F32View,
                    _avg.View.SubView(m.Offset, m.Param.Length), _avgSq.View.SubView(m.Offset, m.Param.Length))).ToList(), hyper);
        }

        public void Export(float[] avg, float[] avgSq)
        {
            if (_total == 0) return;
            _avg.View.SubView(0, _total).CopyToCPU(avg);
            _avgSq.View.SubView(0, _total).CopyToCPU(avgSq);
        }

        public void Import(float[] avg, float[] avgSq)
        {
            if (_total == 0) return;
            _avg.View.SubView(0, _total).CopyFromCPU(avg);
            _avgSq.View.SubView(0, _total).CopyFromCPU(avgSq);
        }

        public void Dispose()
        {
            _avg.Dispose();
            _avgSq.Dispose();
            _device.Allocator.TrackExternal(-_bytes);
        }
    }

    private sealed class PagedAdamWState : IAdamWState
    {
        // Staging slots in the ring: chunk j+1 is uploaded into the slot chunk j-2 used, so it need not wait for chunk j-1's download.
        private const int StagingSlots = 3;

        private readonly Device _device;
        private readonly PageLockedArray1D<float> _pinnedAvg, _pinnedAvgSq;
        private readonly MemoryBuffer1D<float, Stride1D.Dense>[] _stages; // per slot: exp_avg in [0, c), exp_avg_sq in [c, 2c)
        private readonly long _chunkElements;
        private readonly AcceleratorStream _upload, _download, _update;
        private readonly List<StreamFence> _fences = []; // one per chunk: chunk j's update done
        private readonly List<Tensor> _fenced = [];        // parameters given a fence by the last step
        private readonly long _bytes;

        public PagedAdamWState(Device device, long total, long pagedChunkElements)
        {
            _device = device;
            var acc = device.Accelerator!;
            _pinnedAvg = acc.AllocatePageLocked1D<float>(Math.Max(total, 1));
            _pinnedAvgSq = acc.AllocatePageLocked1D<float>(Math.Max(total, 1));
            _pinnedAvg.Span.Clear();
            _pinnedAvgSq.Span.Clear();
            _chunkElements = Math.Max(1, Math.Min(pagedChunkElements, total));
            _stages = new MemoryBuffer1D<float, Stride1D.Dense>[StagingSlots];
            for (int s = 0; s < StagingSlots; s++) _stages[s] = acc.Allocate1D<float>(2 * _chunkElements);
            _bytes = StagingSlots * 2 * _chunkElements * sizeof(float);
            _upload = device.CreateSideStream();
            _download = device.CreateSideStream();
            _update = device.CreateSideStream();
            device.Allocator.TrackExternal(_bytes); // the reported peak includes the optimizer's share
        }

        public bool IsPaged => true;

        // A piece: elements [From, From + Length) of a parameter (its state at Offset), staged at At in its chunk's slot.
        private readonly record struct Piece(Tensor Param, long Offset, long From, long Length, long At);

        private sealed record Chunk(AdamWStep Hyper, List<Piece> Pieces);

        // Cuts the state of the members (one step group) into chunks of at most _chunkElements, splitting parameters as needed.
        private List<Chunk> Chunks(IReadOnlyList<AdamWSlice> members, AdamWStep hyper)
        {
            var chunks = new List<Chunk>();
            Chunk? open = null;
            long used = 0;
            foreach (var (p, offset) in members)
            {
                for (long from = 0; from < p.Length;)
                {
                    if (open == null || used == _chunkElements)
                    {
                        chunks.Add(open = new Chunk(hyper, []));
                        used = 0;
                    }
                    long n = Math.Min(p.Length - from, _chunkElements - used);
                    open.Pieces.Add(new Piece(p, offset, from, n, used));
                    used += n;
                    from += n;
                }
            }
            return chunks;
        }

        // The step being enqueued: its chunks, each chunk's kernel arguments (views taken before any pending write is set, so
        // enqueueing never reads a parameter's view) and how many chunks are enqueued so far.
        private List<Chunk>? _queued;
        private List<List<AdamWTensor>>? _arguments;
        private int _enqueued;

        // Chunk j uses slot j % 3. Enqueued per j, in this order (Order(a, b): later work on b waits for the work on a so far):
        //   Order(upload, update)      kernel j after upload j (upload j+1 is not enqueued yet)
        //   kernel j                   on the update stream; then fence j, which every parameter ending in chunk j carries
        //   Order(download, upload)    upload j+1 into the slot of chunk j-2 after download j-2 (download j-1 is not enqueued yet)
        //   upload j+1
        //   download j-1               already behind kernel j-1 (the Order below, one round earlier)
        //   Order(update, download)    download j after kernel j
        // so kernel j, upload j+1 and download j-1 run at once. The update stream starts behind the default stream's work so
        // far (the gradients, clipped); the default stream does not wait for the step as a whole: a launch that reads a
        // parameter waits for its fence (Tensor.SetPendingWrite), and Settle joins the rest. Chunks are enqueued lazily, when
        // the host first takes the view of a parameter in them (the next forward pass, layer by layer) or at Settle, so the
        // step costs the host almost nothing before that pass can be enqueued. A step starts behind the last step's downloads
        // (they may still run while the next forward pass does), because its uploads read the host state those downloads write.
        public void Step(IReadOnlyList<AdamWGroup> groups)
        {
            var chunks = groups.SelectMany(g => Chunks(g.Members, g.Hyper)).ToList();
            if (chunks.Count == 0) return;
            Settle();
            var acc = _device.Accelerator!;
            while (_fences.Count < chunks.Count) _fences.Add(new StreamFence(acc));
            _arguments = chunks.Select((chunk, j) =>
            {
                var stage = _stages[j % StagingSlots].View.AsContiguous();
                return chunk.Pieces.Select(c => new AdamWTensor(c.Param.F32View.SubView(c.From, c.Length),
                    c.Param.Grad!.F32View.SubView(c.From, c.Length), stage.SubView(c.At, c.Length),
                    stage.SubView(_chunkElements + c.At, c.Length))).ToList();
            }).ToList();
            _device.Order(acc.DefaultStream, _update);
            _device.Order(_download, _upload);
            Copy(chunks[0], 0, toDevice: true);
            (_queued, _enqueued) = (chunks, 0);
            // A parameter is written once its last piece is: the launches that read it next enqueue that chunk (if not yet)
            // and wait for it, and its gradient stays alive (an alias) until they have been ordered behind it.
            for (int j = 0; j < chunks.Count; j++)
            {
                int last = j;
                foreach (var piece in chunks[j].Pieces)
                    if (piece.From + piece.Length == piece.Param.Length)
                    {
                        piece.Param.SetPendingWrite(new PendingWrite(_fences[j], piece.Param.Grad!.Alias(), () => EnqueueThrough(last)));
                        _fenced.Add(piece.Param);
                    }
            }
            EnqueueThrough(0);
        }

        private void EnqueueThrough(int last)
        {
            if (_queued is not { } chunks) return;
            var kernels = _device.RequireKernels();
            for (; _enqueued <= last && _enqueued < chunks.Count; _enqueued++)
            {
                int j = _enqueued;
                _device.Order(_upload, _update);
                AdamWKernels.StepMulti(kernels, _arguments![j], chunks[j].Hyper, _update);
                _fences[j].Record(_update);
                if (j + 1 < chunks.Count)
                {
                    _device.Order(_download, _upload);
                    Copy(chunks[j + 1], j + 1, toDevice: true);
                }
                if (j > 0) Copy(chunks[j - 1], j - 1, toDevice: false);
                _device.Order(_update, _download);
            }
            if (_enqueued < chunks.Count) return;
            Copy(chunks[^1], chunks.Count - 1, toDevice: false);
            (_queued, _arguments) = (null, null);
        }

        // The rest of the last step is enqueued, and the default stream waits for whatever of it no launch has waited for yet,
        // releasing those gradients.
        public void Settle()
        {
            EnqueueThrough(int.MaxValue);
            foreach (var p in _fenced)
                if (!p.IsDisposed) p.SettlePendingWrite();
            _fenced.Clear();
        }

        // Both moments of chunk `number` between host state and its slot, on the upload or download stream. Pieces that are
        // neighbours in the flat host state are neighbours in the slot too, so they go as one copy.
        private void Copy(Chunk chunk, int number, bool toDevice)
        {
            var pieces = chunk.Pieces;
            var stage = _stages[number % StagingSlots].View.AsContiguous();
            var stream = toDevice ? _upload : _download;
            for (int a = 0; a < pieces.Count;)
            {
                long host = pieces[a].Offset + pieces[a].From, length = pieces[a].Length;
                int b = a + 1;
                for (; b < pieces.Count && pieces[b].Offset + pieces[b].From == host + length; b++) length += pieces[b].Length;
                long at = pieces[a].At;
                var avg = _pinnedAvg.ArrayView.SubView(host, length);
                var avgSq = _pinnedAvgSq.ArrayView.SubView(host, length);
                var stageAvg = stage.SubView(at, length);
                var stageAvgSq = stage.SubView(_chunkElements + at, length);
                if (toDevice)
                {
                    avg.CopyTo(stream, stageAvg);
                    avgSq.CopyTo(stream, stageAvgSq);
                }
                else
                {
                    stageAvg.CopyTo(stream, avg);
                    stageAvgSq.CopyTo(stream, avgSq);
                }
                a = b;
            }
        }

        public void Export(float[] avg, float[] avgSq)
        {
            EnqueueThrough(int.MaxValue);
            _device.Synchronize(); // the whole context: the copy streams too
            _pinnedAvg.Span[..avg.Length].CopyTo(avg);
            _pinnedAvgSq.Span[..avgSq.Length].CopyTo(avgSq);
        }

        public void Import(float[] avg, float[] avgSq)
        {
            EnqueueThrough(int.MaxValue);
            _device.Synchronize(); // no upload may still be reading the state
            avg.CopyTo(_pinnedAvg.Span);
            avgSq.CopyTo(_pinnedAvgSq.Span);
        }

        public void Dispose()
        {
            Settle();
            _device.Synchronize(); // copies into the page-locked state may still be in flight (on every stream)
            foreach (var fence in _fences) fence.Dispose();
            _upload.Dispose();
            _download.Dispose();
            _update.Dispose();
            foreach (var stage in _stages) stage.Dispose();
            _pinnedAvg.Dispose();
            _pinnedAvgSq.Dispose();
            _device.Allocator.TrackExternal(-_bytes);
        }
    }
}
