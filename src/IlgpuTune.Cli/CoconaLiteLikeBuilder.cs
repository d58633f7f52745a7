using Cocona;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;

namespace IlgpuTune.Cli;

/// <summary>Cocona app without the host's console logging noise, and with signals left to the commands (Signals.cs).</summary>
internal static class CoconaLiteLikeBuilder
{
    public static CoconaApp Create(string[] args)
    {
        var builder = CoconaApp.CreateBuilder(args, options => options.EnableShellCompletionSupport = false);
        builder.Logging.ClearProviders();
        builder.Services.AddSingleton<IHostLifetime, CommandLifetime>();
        return builder.Build();
    }
}
