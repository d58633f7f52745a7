// PEFT LoRA adapter folders (formats.md §4): adapter_config.json + adapter_model.safetensors with keys
// "base_model.model.<module>.lora_A.weight" [r, in] and ".lora_B.weight" [out, r].
using System.Text.Json;
using System.Text.Json.Nodes;
using IlgpuTune.Core;
using IlgpuTune.IO;
using IlgpuTune.Numerics;

namespace IlgpuTune.Model;

public static class PeftAdapter
{
    public const string ConfigFile = "adapter_config.json";
    public const string WeightsFile = "adapter_model.safetensors";

    public static LoraConfig ReadConfig(string directory)
    {
        string file = Path.Combine(directory, ConfigFile);
        if (!File.Exists(file)) throw new FileNotFoundException($"no {ConfigFile} in {directory}", file);
        JsonObject o;
        try
        {
            o = JsonNode.Parse(File.ReadAllText(file)) as JsonObject ?? throw new InvalidDataException($"{file}: expected a JSON object");
        }
        catch (JsonException e)
        {
            throw new InvalidDataException($"{file}: not valid JSON ({e.Message})", e);
        }
        string peftType = o["peft_type"]?.GetValue<string>() ?? "LORA";
        if (peftType != "LORA") throw new InvalidDataException($"{file}: peft_type '{peftType}' is not supported (expected LORA)");
        if (o["use_dora"]?.GetValue<bool>() == true) throw new InvalidDataException($"{file}: use_dora adapters are not supported");
        foreach (var key in new[] { "rank_pattern", "alpha_pattern" })
            if (o[key] is JsonObject p && p.Count > 0) throw new InvalidDataException($"{file}: per-module '{key}' is not supported");
        if (o["bias"]?.GetValue<string>() is { } bias && bias != "none")
            throw new InvalidDataException($"{file}: bias '{bias}' is not supported (expected none)");
        var targets = o["target_modules"] switch
        {
            JsonArray a => a.Select(n => n!.GetValue<string>()).ToArray(),
            JsonValue v => throw new InvalidDataException(
                $"{file}: target_modules as a pattern ('{v}') is not supported; list the module names"),
            _ => throw new InvalidDataException($"{file}: missing target_modules"),
        };
        int r = o["r"]?.GetValue<int>() ?? 8;
        float alpha = (float)(o["lora_alpha"]?.GetValue<double>() ?? 8);
        float dropout = (float)(o["lora_dropout"]?.GetValue<double>() ?? 0);
        bool rs = o["use_rslora"]?.GetValue<bool>() ?? false;
        return new LoraConfig(r, alpha, dropout, targets, rs);
    }

    /// <summary>Attaches the adapter in <paramref name="directory"/> to the model; every targeted module must have A and B, and
    /// every tensor in the file must belong to one.</summary>
    public static IReadOnlyList<LinearModule> Load(string directory, CausalLM model)
    {
        var config = ReadConfig(directory);
        string file = Path.Combine(directory, WeightsFile);
        using var weights = SafetensorsFile.Open(file);
        var targeted = model.Linears.Where(l => config.Targets(l.Name)).ToList();
        if (targeted.Count == 0)
            throw new InvalidDataException($"{directory}: target_modules [{string.Join(", ", config.TargetModules)}] match no layer of the model");
        var used = new HashSet<string>();
        foreach (var p in model.Parameters.Values) p.RequiresGrad = false;
        foreach (var l in targeted)
        {
            string aKey = l.PeftPrefix + ".lora_A.weight", bKey = l.PeftPrefix + ".lora_B.weight";
            foreach (var key in new[] { aKey, bKey })
                if (!weights.Contains(key)) throw new InvalidDataException($"{file}: missing tensor '{key}'");
            var a = Read(weights, aKey, config.R, l.InFeatures, model.Device, file);
            var b = Read(weights, bKey, l.OutFeatures, config.R, model.Device, file);
            l.AttachLora(config, a, b);
            used.Add(aKey);
            used.Add(bKey);
        }
        var extra = weights.Tensors.Select(t => t.Name).Where(n => !used.Contains(n)).ToList();
        if (extra.Count > 0) throw new InvalidDataException($"{file}: unexpected tensors {string.Join(", ", extra.Take(8))}");
        return targeted;
    }

    private static Tensor Read(SafetensorsFile weights, string key, int rows, int cols, Device device, string file)
    {
        var info = weights.Get(key);
        if (info.Shape.Length != 2 || info.Shape[0] != rows || info.Shape[1] != cols)
            throw new InvalidDataException($"{file}: tensor '{key}' has shape [{string.Join(", ", info.Shape)}], expected [{rows}, {cols}]");
        return Tensor.FromArray(device, weights.ReadFloat32(key), rows, cols);
    }

    /// <summary>Writes the model's LoRA tensors as a PEFT adapter folder (atomic per file); <paramref name="dtype"/> F32, F16 or BF16.</summary>
    public static void Save(string directory, CausalLM model, string baseModelNameOrPath, DType dtype = DType.F32)
    {
        var modules = model.Linears.Where(l => l.Lora is not null).ToList();
        if (modules.Count == 0) throw new InvalidOperationException("the model has no LoRA adapter to save");
        Write(directory, modules[0].Lora!, modules.Select(l => l.Name),
            modules.SelectMany(l => new[] { l.LoraA!, l.LoraB! }).Select(t => (t.Name!, t.ToFloatArray(), t.Shape)),
            baseModelNameOrPath, dtype);
    }

    /// <summary>
    /// Writes adapter_config.json + adapter_model.safetensors from named tensors (PEFT keys). target_modules lists the last
    /// name component of each adapted module, as PEFT saves it.
    /// </summary>
    public static void Write(string directory, LoraConfig lora, IEnumerable<string> moduleNames,
        IEnumerable<(string Name, float[] Data, int[] Shape)> tensors, string baseModelNameOrPath, DType dtype = DType.F32)
    {
        Directory.CreateDirectory(directory);
        SafetensorsWriter.Write(Path.Combine(directory, WeightsFile),
            tensors.Select(t => new TensorToWrite(t.Name, dtype, t.Shape.Select(d => (long)d).ToArray(), SafetensorsWriter.Encode(t.Data, dtype))));
        var targets = moduleNames.Select(n => n[(n.LastIndexOf('.') + 1)..]).Distinct().OrderBy(s => s, StringComparer.Ordinal);
        var config = new SortedDictionary<string, object?>(StringComparer.Ordinal)
        {
            ["alpha_pattern"] = new Dictionary<string, object>(),
            ["base_model_name_or_path"] = baseModelNameOrPath,
            ["bias"] = "none",
            ["fan_in_fan_out"] = false,
            ["inference_mode"] = true,
            ["init_lora_weights"] = true,
            ["layers_pattern"] = null,
            ["layers_to_transform"] = null,
            ["lora_alpha"] = lora.Alpha,
            ["lora_dropout"] = lora.Dropout,
            ["modules_to_save"] = null,
            ["peft_type"] = "LORA",
            ["r"] = lora.R,
            ["rank_pattern"] = new Dictionary<string, object>(),
            ["revision"] = null,
            ["target_modules"] = targets.ToArray(),
            ["task_type"] = "CAUSAL_LM",
            ["use_dora"] = false,
            ["use_rslora"] = lora.UseRsLora,
        };
        AtomicFile.WriteAllText(Path.Combine(directory, ConfigFile),
            JsonSerializer.Serialize(config, ModelJson.Default.SortedDictionaryStringObject) + "\n");
    }
}
