// Ctrl-C (SIGINT) and SIGTERM reach the command that is running: the generic host's console lifetime, which would turn
// them into a host shutdown that waits 30 s for the command and then exits 0, is replaced by one that does nothing
// (CommandLifetime). A command that stops cleanly registers a Signals for its lifetime; elsewhere a signal ends the
// process at once, as for any console program.
using System.Runtime.InteropServices;
using Microsoft.Extensions.Hosting;

namespace IlgpuTune.Cli;

internal sealed class CommandLifetime : IHostLifetime
{
    public Task WaitForStartAsync(CancellationToken cancellationToken) => Task.CompletedTask;
    public Task StopAsync(CancellationToken cancellationToken) => Task.CompletedTask;
}

/// <summary>
/// SIGINT / SIGTERM while a command runs: <c>onSignal</c> decides, per signal, whether the command handles it (true: the
/// process goes on) or the default applies (false: the process ends at once, exit 130 / 143).
/// </summary>
internal sealed class Signals : IDisposable
{
    private readonly PosixSignalRegistration[] _registrations;
    private readonly Func<PosixSignal, bool> _onSignal;

    public Signals(Func<PosixSignal, bool> onSignal)
    {
        _onSignal = onSignal;
        _registrations = [PosixSignalRegistration.Create(PosixSignal.SIGINT, Handle), PosixSignalRegistration.Create(PosixSignal.SIGTERM, Handle)];
    }

    /// <summary>The shell's exit status for a process ended by <paramref name="signal"/>: 128 + its number.</summary>
    public static int ExitCode(PosixSignal signal) => signal == PosixSignal.SIGTERM ? 143 : 130;

    private void Handle(PosixSignalContext context) => context.Cancel = _onSignal(context.Signal);

    public void Dispose()
    {
        foreach (var r in _registrations) r.Dispose();
    }
}

/// <summary>The first SIGINT / SIGTERM asks the command to stop after its current step (<see cref="Token"/>); a second one
/// ends the process at once.</summary>
internal sealed class StopSignal : IDisposable
{
    private readonly CancellationTokenSource _cts = new();
    private readonly Signals _signals;
    private readonly Lock _gate = new();

    public StopSignal() => _signals = new Signals(OnSignal);

    public PosixSignal? Received { get; private set; }
    public CancellationToken Token => _cts.Token;

    private bool OnSignal(PosixSignal signal)
    {
        lock (_gate)
        {
            if (Received is not null) return false;
            Received = signal;
        }
        _cts.Cancel();
        return true;
    }

    public void Dispose()
    {
        _signals.Dispose();
        _cts.Dispose();
    }
}
