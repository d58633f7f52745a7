// `copy-cfg NAME DIR --format py`: a TrainConfig written as an XTuner v0.1 .py config, in the five parts and names of
// XTuner's own configs, so that XtunerPyConfig reads it back to the same TrainConfig.
using System.Text;
using IlgpuTune.Data.Datasets;
using IlgpuTune.Data.Templates;
using static IlgpuTune.Training.Configs.PyConfig;

namespace IlgpuTune.Training.Configs;

public static class XtunerPyWriter
{
    public static string Write(TrainConfig c, string name)
    {
        if (c.Device is not null || c.DumpBatches)
            throw new ConfigException($"{name}: device and dump_batches have no XTuner .py form; pass them with --cfg-options");
        string? mapFn = DatasetMapFns.Parse(c.DatasetMapFn) switch
        {
            DatasetFormat.Conversation => null,
            DatasetFormat.Alpaca => "alpaca_map_fn",
            DatasetFormat.Oasst1 => "oasst1_map_fn",
            DatasetFormat.Colors => "colors_map_fn",
            DatasetFormat.OpenAI => "openai_map_fn",
            DatasetFormat.Text => "pretrain_map_fn",
            var f => throw new ConfigException($"{name}: dataset_map_fn {f} has no XTuner .py form"),
        };
        bool template = c.PromptTemplate != "none";
        if (template && !XtunerTemplates.Prompt.ContainsKey(c.PromptTemplate))
            throw new ConfigException($"{name}: prompt_template '{c.PromptTemplate}' is not an XTuner PROMPT_TEMPLATE, so it has no .py form");
        bool qlora = c.Quantization == "nf4";
        bool amp = c.Dtype != "float32";
        var exts = c.DataPath.Select(p => Path.GetExtension(p).ToLowerInvariant()).Distinct().ToList();
        string builder = exts.Count == 1 ? exts[0] switch { ".parquet" => "parquet", ".csv" => "csv", ".txt" => "text", _ => "json" } : "json";

        bool pref = c.Preference != "none";
        string modelType = c.Preference switch { "dpo" => "DPO", "orpo" => "ORPO", "reward" => "RewardModel", _ => "SupervisedFinetune" };
        var s = new StringBuilder();
        void L(string line = "") => s.Append(line).Append('\n');
        void Part(string title)
        {
            L();
            L("#######################################################################");
            L($"#{title,-70}#");
            L("#######################################################################");
        }
        L($"# {name}: an XTuner config, written by `ilgpu-tune copy-cfg --format py`. ilgpu-tune reads it (never runs it).");
        if (qlora) L("import torch");
        L("from datasets import load_dataset");
        L("from mmengine.dataset import DefaultSampler");
        L("from mmengine.hooks import (CheckpointHook, DistSamplerSeedHook, IterTimerHook,");
        L("                            LoggerHook, ParamSchedulerHook)");
        L($"from mmengine.optim import {(amp ? "AmpOptimWrapper" : "OptimWrapper")}, CosineAnnealingLR, LinearLR");
        if (c.Lora is not null) L("from peft import LoraConfig");
        L(c.PagedOptimizer ? "from bitsandbytes.optim import PagedAdamW32bit" : "from torch.optim import AdamW");
        L(qlora ? "from transformers import (AutoModelForCausalLM, AutoTokenizer,\n                          BitsAndBytesConfig)"
            : "from transformers import AutoModelForCausalLM, AutoTokenizer");
        L();
        L(pref ? "from xtuner.dataset.preference_dataset import build_preference_dataset" : "from xtuner.dataset import process_hf_dataset");
        L($"from xtuner.dataset.collate_fns import {(pref ? "preference_collate_fn" : "default_collate_fn")}");
        var fns = new[] { mapFn, template ? "template_map_fn_factory" : null }.Where(f => f is not null).ToList();
        if (fns.Count > 0) L($"from xtuner.dataset.map_fns import {string.Join(", ", fns)}");
        L("from xtuner.engine.hooks import (DatasetInfoHook, EvaluateChatHook,");
        L("                                 VarlenAttnArgsToMessageHubHook)");
        L("from xtuner.engine.runner import TrainLoop");
        L($"from xtuner.model import {modelType}");
        var utils = new[] { template ? "PROMPT_TEMPLATE" : null, c.SystemTemplate is not null ? "SYSTEM_TEMPLATE" : null }.Where(u => u is not null).ToList();
        if (utils.Count > 0) L($"from xtuner.utils import {string.Join(", ", utils)}");

        Part("                          PART 1  Settings");
        L("# Model");
        L($"pretrained_model_name_or_path = {StrRepr(c.PretrainedModelNameOrPath)}");
        L("use_varlen_attn = True  # packed samples never attend to each other (always so in ilgpu-tune)");
        L();
        L("# Data");
        L($"data_files = [{string.Join(", ", c.DataPath.Select(StrRepr))}]");
        if (template) L($"prompt_template = PROMPT_TEMPLATE.{c.PromptTemplate}");
        L($"max_length = {c.MaxLength}");
        L($"pack_to_max_length = {Bool(c.PackToMaxLength)}");
        L();
        L("# Scheduler & Optimizer");
        L($"batch_size = {c.BatchSize}  # per_device");
        L($"accumulative_counts = {c.AccumulativeCounts}");
        L("dataloader_num_workers = 0");
        L($"max_epochs = {c.MaxEpochs}");
        L($"optim_type = {(c.PagedOptimizer ? "PagedAdamW32bit" : "AdamW")}");
        L($"lr = {FloatRepr(c.Lr)}");
        L($"betas = ({FloatRepr(c.Betas[0])}, {FloatRepr(c.Betas[1])})");
        L($"weight_decay = {FloatRepr(c.WeightDecay)}");
        L($"max_norm = {FloatRepr(c.MaxNorm)}  # grad clip");
        L($"warmup_ratio = {FloatRepr(c.WarmupRatio)}");
        L();
        L("# Save");
        L($"save_steps = {c.SaveSteps}");
        L($"save_total_limit = {c.SaveTotalLimit}  # Maximum checkpoints to keep (-1 means unlimited)");
        L();
        L("# Evaluate the generation performance during the training");
        L($"evaluation_freq = {c.EvaluationFreq}");
        L(c.SystemTemplate is not null ? $"SYSTEM = SYSTEM_TEMPLATE.{c.SystemTemplate}" : $"SYSTEM = {StrRepr(c.System ?? "")}");
        L($"evaluation_inputs = [{string.Join(", ", c.EvaluationInputs.Select(StrRepr))}]");

        Part("                      PART 2  Model & Tokenizer");
        L("tokenizer = dict(");
        L("    type=AutoTokenizer.from_pretrained,");
        L($"    pretrained_model_name_or_path={(c.Tokenizer is null ? "pretrained_model_name_or_path" : StrRepr(c.Tokenizer))},");
        L("    trust_remote_code=True,");
        L("    padding_side='right')");
        L();
        L("model = dict(");
        L($"    type={modelType},");
        if (pref)
        {
            // ilgpu-tune reads these as the YAML keys of the same names (the reference is always the policy's own base).
            L($"    beta={FloatRepr(c.Beta)},");
            if (c.LossType is { } lt) L($"    loss_type={StrRepr(lt)},");
            L($"    label_smoothing={FloatRepr(c.LabelSmoothing)},");
            L($"    penalty_type={StrRepr(c.PenaltyType)},");
            L($"    penalty_weight={FloatRepr(c.PenaltyWeight)},");
            if (c.RewardTokenId is { } rt) L($"    reward_token_id={rt},");
        }
        L("    use_varlen_attn=use_varlen_attn,");
        L($"    use_activation_checkpointing={Bool(c.GradientCheckpointing)},");
        if (c.Lora?.InitAdapter is { } init) L($"    peft_model={StrRepr(init)},");
        L("    llm=dict(");
        L("        type=AutoModelForCausalLM.from_pretrained,");
        L("        pretrained_model_name_or_path=pretrained_model_name_or_path,");
        L(qlora ? "        trust_remote_code=True," : $"        trust_remote_code=True){(c.Lora is null ? ")" : ",")}");
        if (qlora)
        {
            string torchDtype = c.Dtype == "float16" ? "torch.float16" : c.Dtype == "bfloat16" ? "torch.bfloat16" : "torch.float32";
            L($"        torch_dtype={torchDtype},");
            L("        quantization_config=dict(");
            L("            type=BitsAndBytesConfig,");
            L("            load_in_4bit=True,");
            L("            load_in_8bit=False,");
            L("            llm_int8_threshold=6.0,");
            L("            llm_int8_has_fp16_weight=False,");
            L($"            bnb_4bit_compute_dtype={torchDtype},");
            L("            bnb_4bit_use_double_quant=True,");
            L($"            bnb_4bit_quant_type='nf4')){(c.Lora is null ? ")" : ",")}");
        }
        if (c.Lora is { } lora)
        {
            L("    lora=dict(");
            L("        type=LoraConfig,");
            L($"        r={lora.R},");
            L($"        lora_alpha={Num(lora.LoraAlpha)},");
            L($"        lora_dropout={FloatRepr(lora.LoraDropout)},");
            if (lora.TargetModules is { } targets) L($"        target_modules=[{string.Join(", ", targets.Select(StrRepr))}],");
            if (lora.UseRslora) L("        use_rslora=True,");
            L("        bias='none',");
            L("        task_type='CAUSAL_LM'))");
        }

        Part("                      PART 3  Dataset & Dataloader");
        if (pref)
        {
            // XTuner cuts each side to max_length and packs rows of max_packed_length: here each side gets half a row.
            L("train_dataset = dict(");
            L("    type=build_preference_dataset,");
            L($"    dataset=dict(type=load_dataset, path='{builder}', data_files=data_files),");
            L("    tokenizer=tokenizer,");
            L($"    max_length={c.MaxLength / 2},");
            L("    dataset_map_fn=None,");
            L($"    is_dpo={Bool(c.Preference != "reward")},");
            L($"    is_reward={Bool(c.Preference == "reward")},");
            L($"    reward_token_id={c.RewardTokenId ?? -1},");
            L("    num_proc=1,");
            L("    use_varlen_attn=use_varlen_attn,");
            L("    max_packed_length=max_length,");
            L($"    shuffle_before_pack={Bool(c.ShuffleBeforePack)})");
        }
        else
        {
        L("train_dataset = dict(");
        L("    type=process_hf_dataset,");
        L($"    dataset=dict(type=load_dataset, path='{builder}', data_files=data_files),");
        L("    tokenizer=tokenizer,");
        L("    max_length=max_length,");
        L($"    dataset_map_fn={mapFn ?? "None"},");
        L(template ? "    template_map_fn=dict(\n        type=template_map_fn_factory, template=prompt_template)," : "    template_map_fn=None,");
        L("    remove_unused_columns=True,");
        L($"    shuffle_before_pack={Bool(c.ShuffleBeforePack)},");
        L("    pack_to_max_length=pack_to_max_length,");
        L("    use_varlen_attn=use_varlen_attn)");
        }
        L();
        L("train_dataloader = dict(");
        L("    batch_size=batch_size,");
        L("    num_workers=dataloader_num_workers,");
        L("    dataset=train_dataset,");
        L("    sampler=dict(type=DefaultSampler, shuffle=True),");
        L($"    collate_fn=dict(type={(pref ? "preference_collate_fn" : "default_collate_fn")}, use_varlen_attn=use_varlen_attn))");

        Part("                    PART 4  Scheduler & Optimizer");
        L("# optimizer");
        L("optim_wrapper = dict(");
        L($"    type={(amp ? "AmpOptimWrapper" : "OptimWrapper")},");
        L("    optimizer=dict(");
        L("        type=optim_type, lr=lr, betas=betas, weight_decay=weight_decay),");
        L(c.MaxNorm > 0 ? "    clip_grad=dict(max_norm=max_norm, error_if_nonfinite=False)," : "    clip_grad=None,");
        L(amp ? "    accumulative_counts=accumulative_counts,\n    loss_scale='dynamic'," : "    accumulative_counts=accumulative_counts)");
        if (amp) L($"    dtype='{c.Dtype}')");
        L();
        L("# learning policy");
        L("param_scheduler = [");
        L("    dict(");
        L("        type=LinearLR,");
        L("        start_factor=1e-5,");
        L("        by_epoch=True,");
        L("        begin=0,");
        L("        end=warmup_ratio * max_epochs,");
        L("        convert_to_iter_based=True),");
        L("    dict(");
        L("        type=CosineAnnealingLR,");
        L("        eta_min=0.0,");
        L("        by_epoch=True,");
        L("        begin=warmup_ratio * max_epochs,");
        L("        end=max_epochs,");
        L("        convert_to_iter_based=True)");
        L("]");
        L();
        L("# train, val, test setting");
        L(c.MaxIters is { } mi ? $"train_cfg = dict(type=TrainLoop, max_epochs=max_epochs, max_iters={mi})" : "train_cfg = dict(type=TrainLoop, max_epochs=max_epochs)");

        Part("                           PART 5  Runtime");
        L("# Log the dialogue periodically during the training process, optional");
        L("custom_hooks = [");
        L("    dict(type=DatasetInfoHook, tokenizer=tokenizer),");
        L("    dict(");
        L("        type=EvaluateChatHook,");
        L("        tokenizer=tokenizer,");
        L("        every_n_iters=evaluation_freq,");
        L("        evaluation_inputs=evaluation_inputs,");
        L($"        max_new_tokens={c.EvaluationMaxNewTokens},");
        L(template ? "        system=SYSTEM,\n        prompt_template=prompt_template)" : "        system=SYSTEM)");
        L("]");
        L();
        L("if use_varlen_attn:");
        L("    custom_hooks += [dict(type=VarlenAttnArgsToMessageHubHook)]");
        L();
        L("# configure default hooks");
        L("default_hooks = dict(");
        L("    # record the time of every iteration.");
        L("    timer=dict(type=IterTimerHook),");
        L($"    # print log every {c.LoggingSteps} iterations.");
        L($"    logger=dict(type=LoggerHook, log_metric_by_epoch=False, interval={c.LoggingSteps}),");
        L("    # enable the parameter scheduler.");
        L("    param_scheduler=dict(type=ParamSchedulerHook),");
        L("    # save checkpoint per `save_steps`.");
        L("    checkpoint=dict(");
        L("        type=CheckpointHook,");
        L("        by_epoch=False,");
        L("        interval=save_steps,");
        L("        max_keep_ckpts=save_total_limit),");
        L("    # set sampler seed in distributed evrionment.");
        L("    sampler_seed=dict(type=DistSamplerSeedHook),");
        L(")");
        L();
        L("# configure environment");
        L("env_cfg = dict(");
        L("    cudnn_benchmark=False,");
        L("    mp_cfg=dict(mp_start_method='fork', opencv_num_threads=0),");
        L("    dist_cfg=dict(backend='nccl'),");
        L(")");
        L();
        L("visualizer = None");
        L("log_level = 'INFO'");
        L("load_from = None");
        L("resume = False");
        if (c.WorkDir is not null) L($"work_dir = {StrRepr(c.WorkDir)}");
        L($"randomness = dict(seed={c.Seed}, deterministic=False)");
        L("log_processor = dict(by_epoch=False)");
        return s.ToString();
    }

    static string Bool(bool b) => b ? "True" : "False";

    static string Num(double d) => d == Math.Floor(d) && Math.Abs(d) < 1e15 ? ((long)d).ToString(System.Globalization.CultureInfo.InvariantCulture) : FloatRepr(d);
}
