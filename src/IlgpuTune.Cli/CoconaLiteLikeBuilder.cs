using System.Text;
using Cocona;
using Cocona.Application;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;

namespace IlgpuTune.Cli;

/// <summary>Cocona app without the host's console logging noise, named ilgpu-tune in its help, errors in our style, and with
/// signals left to the commands (Signals.cs).</summary>
internal static class CoconaLiteLikeBuilder
{
    /// <summary>Cocona's exit code for help and for arguments it cannot bind.</summary>
    public const int CoconaUsageExit = 129;

    public static int Run(string[] args, IEnumerable<Type> commandClasses)
    {
        var builder = CoconaApp.CreateBuilder(args, options => options.EnableShellCompletionSupport = false);
        builder.Logging.ClearProviders();
        builder.Services.AddSingleton<IHostLifetime, CommandLifetime>();
        builder.Services.AddSingleton<ICoconaApplicationMetadataProvider, Metadata>();
        var app = builder.Build();
        foreach (var t in commandClasses) app.AddCommands(t);
        var stderr = Console.Error;
        Console.SetError(new LowercaseErrorWriter(stderr));
        try
        {
            app.Run();
        }
        finally
        {
            Console.SetError(stderr);
        }
        return Environment.ExitCode;
    }

    // "Usage: ilgpu-tune train ..." rather than the host's name ("dotnet" when run as `dotnet ilgpu-tune.dll`).
    sealed class Metadata : ICoconaApplicationMetadataProvider
    {
        public string GetProductName() => "ilgpu-tune";
        public string GetExecutableName() => "ilgpu-tune";
        public string GetVersion() =>
            typeof(Metadata).Assembly.GetCustomAttributes(typeof(System.Reflection.AssemblyInformationalVersionAttribute), false)
                .OfType<System.Reflection.AssemblyInformationalVersionAttribute>().FirstOrDefault()?.InformationalVersion ?? "";
        public string GetDescription() => "LLM fine-tuning (XTuner's commands and configs) on ILGPU";
    }

    // Cocona's own binding errors start "Error: "; ours start "error: " (one style for every message).
    sealed class LowercaseErrorWriter(TextWriter inner) : TextWriter
    {
        bool _lineStart = true;
        public override Encoding Encoding => inner.Encoding;
        public override void Write(char value)
        {
            inner.Write(value);
            _lineStart = value == '\n';
        }
        public override void Write(string? value)
        {
            if (string.IsNullOrEmpty(value)) return;
            if (_lineStart && value.StartsWith("Error: ", StringComparison.Ordinal)) value = "e" + value[1..];
            inner.Write(value);
            _lineStart = value[^1] == '\n';
        }
        public override void WriteLine(string? value)
        {
            Write(value);
            Write('\n');
        }
        public override void Flush() => inner.Flush();
    }
}
