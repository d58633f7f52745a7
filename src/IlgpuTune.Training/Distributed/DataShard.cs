// Which rows a rank reads, as mmengine's DefaultSampler(shuffle=True, round_up=True) with DistSamplerSeedHook hands them
// out: every rank shuffles the same way (seed + epoch), the order is padded by repeating its start to a multiple of the
// world size, and rank r takes positions r, r + N, r + 2N, ... So an epoch has ceil(rows / N) rows per rank and every
// rank sees different rows; with one rank this is the plain epoch order.
namespace IlgpuTune.Training.Distributed;

public static class DataShard
{
    /// <summary>Rows per rank in an epoch (mmengine's num_samples with round_up).</summary>
    public static int RowsPerRank(int rows, int worldSize) => (rows + worldSize - 1) / worldSize;

    /// <summary>Rank <paramref name="rank"/>'s rows of <paramref name="epochOrder"/> (the seeded shuffle of all rows).</summary>
    public static int[] ForRank(int[] epochOrder, int rank, int worldSize)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(worldSize, 1);
        ArgumentOutOfRangeException.ThrowIfNegative(rank);
        ArgumentOutOfRangeException.ThrowIfGreaterThanOrEqual(rank, worldSize);
        if (epochOrder.Length == 0) return [];
        int perRank = RowsPerRank(epochOrder.Length, worldSize);
        var mine = new int[perRank];
        for (int k = 0; k < perRank; k++) mine[k] = epochOrder[(rank + k * worldSize) % epochOrder.Length];
        return mine;
    }
}
