namespace IlgpuTune.Data.Datasets;

/// <summary>One bad record: where (file:line or file row N), which field, what is wrong.</summary>
public sealed record DatasetError(string Location, string Field, string Message)
{
    public override string ToString() => $"{Location}: {Field}: {Message}";
}

/// <summary>All problems found in a dataset (up to the reader's limit), reported together.</summary>
public sealed class DatasetException(IReadOnlyList<DatasetError> errors, bool moreOmitted = false)
    : Exception(Describe(errors, moreOmitted))
{
    public IReadOnlyList<DatasetError> Errors { get; } = errors;

    // One problem is one line; several are counted and listed.
    static string Describe(IReadOnlyList<DatasetError> errors, bool more) => errors.Count == 1 && !more ? errors[0].ToString() :
        $"{errors.Count}{(more ? "+" : "")} bad record(s):\n" + string.Join("\n", errors) + (more ? "\n(more errors omitted)" : "");
}
