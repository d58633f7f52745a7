using Cocona;
using Microsoft.Extensions.Logging;

namespace IlgpuTune.Cli;

/// <summary>Cocona app without the host's console logging noise.</summary>
internal static class CoconaLiteLikeBuilder
{
    public static CoconaApp Create(string[] args)
    {
        var builder = CoconaApp.CreateBuilder(args, options => options.EnableShellCompletionSupport = false);
        builder.Logging.ClearProviders();
        return builder.Build();
    }
}
