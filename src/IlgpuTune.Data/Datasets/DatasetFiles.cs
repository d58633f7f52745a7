namespace IlgpuTune.Data.Datasets;

/// <summary>
/// A data_path entry as datasets.load_dataset takes it: a file, or a Hugging Face dataset folder (a hub snapshot with
/// dataset_info(s).json / README.md beside its data files), whose train split is read.
/// </summary>
public static class DatasetFiles
{
    /// <summary>The extensions DatasetReader reads.</summary>
    public static readonly string[] Extensions = [".json", ".jsonl", ".parquet", ".csv", ".tsv", ".xlsx", ".txt"];

    static readonly string[] s_splits = ["train", "test", "validation", "valid", "dev", "eval"];

    /// <summary>Every entry expanded: a file stays as it is; a folder becomes its train split's data files, in path order.</summary>
    public static List<string> Expand(IEnumerable<string> paths) => paths.SelectMany(p => Directory.Exists(p) ? Folder(p) : [p]).ToList();

    /// <summary>
    /// The train split of a dataset folder, by HF's file-name conventions: files named for a split ("train.jsonl",
    /// "data/train-00000-of-00001.parquet", "train/part0.json"); when no file names a split, every data file.
    /// </summary>
    public static List<string> Folder(string dir)
    {
        if (File.Exists(Path.Combine(dir, "state.json")) && Directory.EnumerateFiles(dir, "*.arrow").Any())
            throw new NotSupportedException($"{dir}: a folder written by Dataset.save_to_disk (Arrow files) is not read; " +
                "write it with dataset.to_json(\"train.jsonl\") or dataset.to_parquet(\"train.parquet\") instead");
        var files = Directory.EnumerateFiles(dir, "*", SearchOption.AllDirectories)
            .Select(f => Path.GetRelativePath(dir, f))
            .Where(r => !r.Split(Path.DirectorySeparatorChar).Any(part => part.StartsWith('.')))
            .Where(r => Extensions.Contains(Path.GetExtension(r).ToLowerInvariant()))
            .Where(r => Path.GetFileName(r) is not ("dataset_info.json" or "dataset_infos.json" or "state.json" or "dataset_dict.json"))
            .Order(StringComparer.Ordinal).ToList();
        if (files.Count == 0)
            throw new FileNotFoundException($"{dir}: no data files ({string.Join(", ", Extensions)}) in this dataset folder");
        var train = files.Where(f => SplitOf(f) == "train").ToList();
        if (train.Count > 0) return train.Select(f => Path.Combine(dir, f)).ToList();
        if (files.Any(f => SplitOf(f) is not null))
            throw new FileNotFoundException($"{dir}: no train split (files named train*); found {string.Join(", ", files.Take(5))}");
        return files.Select(f => Path.Combine(dir, f)).ToList();
    }

    // The split a relative path names: a folder or a file-name word such as "train", "train-00000-of-00001", "my_train".
    static string? SplitOf(string relative)
    {
        foreach (string part in relative.Split(Path.DirectorySeparatorChar).Reverse())
        {
            string stem = Path.GetFileNameWithoutExtension(part).ToLowerInvariant();
            foreach (string word in stem.Split(['-', '_', '.', ' ']))
                if (s_splits.Contains(word)) return word is "valid" or "dev" or "eval" ? "validation" : word;
        }
        return null;
    }
}
