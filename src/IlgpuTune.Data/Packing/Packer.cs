using IlgpuTune.Data.Datasets;

namespace IlgpuTune.Data.Packing;

/// <summary>
/// One packed row: samples laid end to end (row length ≤ max_length, not padded). CumulativeLengths = [0, l1, l1+l2, ...,
/// length] for varlen attention; PositionIds restart at 0 in each sample. The first label of every sample is -100: unpacked,
/// the shifted loss never predicts a sample's first token, so packed training must not predict it from the previous sample.
/// </summary>
public sealed record PackedRow(int[] InputIds, int[] Labels, int[] CumulativeLengths, int[] PositionIds, int[] SampleIndices);

/// <summary>Counts for check-dataset and the training log.</summary>
public sealed record PackStats(int Rows, int Samples, int DroppedNoLoss, int Truncated, long Tokens, int MaxLength)
{
    /// <summary>Tokens / (rows × max_length): the share of a padded batch that is real data.</summary>
    public double FillRatio => Rows == 0 ? 0 : (double)Tokens / ((long)Rows * MaxLength);
}

/// <summary>
/// pack_to_max_length without XTuner's sample splitting: first-fit-decreasing bin packing (a segment tree finds the first
/// row with room), fully deterministic for a given seed.
/// </summary>
public static class Packer
{
    public static (List<PackedRow> Rows, PackStats Stats) Pack(IReadOnlyList<EncodedSample> samples, int maxLength,
        bool shuffleBeforePack = true, ulong seed = 0)
    {
        var (members, stats) = Plan(samples, maxLength, shuffleBeforePack, seed);
        return ([.. new PlannedRows(samples, members, packed: true)], stats);
    }

    /// <summary>
    /// Which samples go in which row (first-fit decreasing), without copying any token: <see cref="PlannedRows"/> builds a
    /// row's arrays when it is read, so a cache can be written from the samples without holding every token twice.
    /// </summary>
    public static (List<int[]> Members, PackStats Stats) Plan(IReadOnlyList<EncodedSample> samples, int maxLength,
        bool shuffleBeforePack = true, ulong seed = 0)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(maxLength, 1);
        var order = new List<int>(samples.Count);
        int droppedNoLoss = 0, truncated = 0;
        for (int i = 0; i < samples.Count; i++)
        {
            var s = samples[i];
            if (s.InputIds.Length > maxLength) throw new ArgumentException($"sample {i} is longer than max_length {maxLength}; encode truncates first");
            if (s.Truncated) truncated++;
            if (!s.HasLoss) droppedNoLoss++;   // XTuner filters samples whose labels are all -100
            else order.Add(i);
        }
        if (shuffleBeforePack) Shuffle(order, seed);
        // Stable: equal lengths keep the (shuffled) order.
        var sorted = order.OrderByDescending(i => samples[i].InputIds.Length).ToList();

        var tree = new MaxTree(sorted.Count, maxLength);
        var members = new List<List<int>>();
        foreach (int i in sorted)
        {
            int len = samples[i].InputIds.Length;
            int row = tree.FirstWithRoom(len);
            if (row == members.Count) members.Add([]);
            members[row].Add(i);
            tree.Take(row, len);
        }

        long tokens = 0;
        foreach (var m in members) foreach (int i in m) tokens += samples[i].InputIds.Length;
        return ([.. members.Select(m => m.ToArray())], new PackStats(members.Count, sorted.Count, droppedNoLoss, truncated, tokens, maxLength));
    }

    /// <summary>
    /// One row's arrays from its member samples, positions restarting in each; packed, the label of each sample's first
    /// token is -100 (unpacked, a lone sample keeps its labels as encoded).
    /// </summary>
    public static PackedRow Row(IReadOnlyList<EncodedSample> samples, int[] m, bool packed = true)
    {
        int total = 0;
        foreach (int i in m) total += samples[i].InputIds.Length;
        var ids = new int[total];
        var labels = new int[total];
        var pos = new int[total];
        var cu = new int[m.Length + 1];
        int at = 0;
        for (int k = 0; k < m.Length; k++)
        {
            var s = samples[m[k]];
            s.InputIds.CopyTo(ids, at);
            s.Labels.CopyTo(labels, at);
            if (packed) labels[at] = EncodedSample.IgnoreIndex;
            for (int j = 0; j < s.InputIds.Length; j++) pos[at + j] = j;
            at += s.InputIds.Length;
            cu[k + 1] = at;
        }
        return new PackedRow(ids, labels, cu, pos, [.. m]);
    }

    // Fisher-Yates with SplitMix64, so the order depends on the seed alone (not on System.Random's implementation).
    static void Shuffle(List<int> a, ulong seed)
    {
        ulong state = seed;
        for (int i = a.Count - 1; i > 0; i--)
        {
            state += 0x9E3779B97F4A7C15UL;
            ulong z = state;
            z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9UL;
            z = (z ^ (z >> 27)) * 0x94D049BB133111EBUL;
            z ^= z >> 31;
            int j = (int)(z % (ulong)(i + 1));
            (a[i], a[j]) = (a[j], a[i]);
        }
    }

    // Max of remaining room over rows 0..n-1 (unopened rows have full room); finds the leftmost row with room ≥ len.
    sealed class MaxTree
    {
        readonly int[] _t;
        readonly int _size;

        public MaxTree(int n, int capacity)
        {
            _size = 1;
            while (_size < Math.Max(n, 1)) _size <<= 1;
            _t = new int[2 * _size];
            Array.Fill(_t, capacity);
        }

        public int FirstWithRoom(int len)
        {
            int node = 1;
            while (node < _size) node = _t[2 * node] >= len ? 2 * node : 2 * node + 1;
            return node - _size;
        }

        public void Take(int row, int len)
        {
            int node = row + _size;
            _t[node] -= len;
            for (node >>= 1; node >= 1; node >>= 1) _t[node] = Math.Max(_t[2 * node], _t[2 * node + 1]);
        }
    }
}

/// <summary>Rows built on each read from the samples and a plan (Packer.Plan; unpacked: one sample per row).</summary>
public sealed class PlannedRows(IReadOnlyList<EncodedSample> samples, IReadOnlyList<int[]> members, bool packed) : IReadOnlyList<PackedRow>
{
    public PackedRow this[int index] => Packer.Row(samples, members[index], packed);
    public int Count => members.Count;
    public IEnumerator<PackedRow> GetEnumerator()
    {
        for (int i = 0; i < members.Count; i++) yield return this[i];
    }
    System.Collections.IEnumerator System.Collections.IEnumerable.GetEnumerator() => GetEnumerator();
}
