using IlgpuTune.Kernels;

namespace IlgpuTune.Kernels.Tests;

public class PtxLocalsTests
{
    const string Ptx = """
        .visible .entry K() {
        	.local .align 4 .b8 __local_depot0[4];
        	.local .align 4 .b8 __local_depot1[4];
        	.local .align 4 .b8 __local_depot2[4];
        	.reg .b32 %r<4>;
        	.reg .f32 %f<4>;
        	.reg .b64 %rd<4>;
        	mov.b64	%rd1, __local_depot0;
        	mov.b64	%rd2, __local_depot1;
        	mov.b64	%rd3, __local_depot2;
        	st.local.f32	[%rd1], 0f00000000;
        	ld.local.f32	%f1, [%rd1];
        	st.local.b32	[%rd2], %r1;
        	ld.local.f32	%f2, [%rd2];
        	st.local.b32	[%rd3], %r2;
        	add.u64	%rd0, %rd3, 4;
        }
        """;

    [Fact]
    public void Promote_RewritesOnlySingleTypeAddressUses()
    {
        var (ptx, promoted) = PtxLocals.Promote(Ptx);
        Assert.Equal(1, promoted); // depot1 mixes types, depot2's pointer escapes into arithmetic
        Assert.Contains(".reg .f32 %lpf<1>;", ptx);
        Assert.Contains("mov.f32\t%lpf0, 0f00000000;", ptx);
        Assert.Contains("mov.f32\t%f1, %lpf0;", ptx);
        Assert.DoesNotContain("__local_depot0", ptx);
        Assert.Contains("ld.local.f32\t%f2, [%rd2];", ptx);
        Assert.Contains("st.local.b32\t[%rd3], %r2;", ptx);
        Assert.Contains(".local .align 4 .b8 __local_depot2[4];", ptx);
    }

    [Fact]
    public void Promote_LeavesPtxWithoutLocalsUnchanged() =>
        Assert.Equal((".entry K() { ret; }", 0), PtxLocals.Promote(".entry K() { ret; }"));
}
