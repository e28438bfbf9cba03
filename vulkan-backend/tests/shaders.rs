//! The committed SPIR-V of the built-in kernels and graphics shaders matches its GLSL sources (when glslc is
//! installed; regenerate with `vulkan-backend/shaders/build.sh`).

use std::path::Path;
use std::process::Command;

use gpusched_vulkan::{Builtin, GraphicsBuiltin};

#[test]
fn shaders_up_to_date() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("shaders");
    if Command::new("glslc").arg("--version").output().is_err() {
        // A failure under CI (scripts/setup.sh installs glslc), a skip elsewhere.
        vk_fault_layer::testing::skip_or_fail(
            "shaders_up_to_date",
            "glslc is not installed; cannot check the committed .spv files",
        );
        return;
    }
    let out = std::env::temp_dir().join(format!("gpusched-spv-{}", std::process::id()));
    std::fs::create_dir_all(&out).unwrap();
    for b in Builtin::ALL {
        let name = b.source_name();
        let spv = out.join(format!("{name}.spv"));
        let status = Command::new("glslc")
            .args(["--target-env=vulkan1.2", "-O", "-o"])
            .arg(&spv)
            .arg(dir.join(format!("{name}.comp")))
            .status()
            .unwrap();
        assert!(status.success(), "glslc failed on {name}.comp");
        let fresh = std::fs::read(&spv).unwrap();
        assert_eq!(
            fresh,
            b.spirv(),
            "shaders/{name}.spv is stale: run vulkan-backend/shaders/build.sh and commit"
        );
        assert_eq!(fresh, std::fs::read(dir.join(format!("{name}.spv"))).unwrap());
    }
    for g in GraphicsBuiltin::ALL {
        let (vert, frag) = g.source_names();
        let (vert_spv, frag_spv) = g.spirv();
        for (name, committed) in [(vert, vert_spv), (frag, frag_spv)] {
            let spv = out.join(format!("{name}.spv"));
            let status = Command::new("glslc")
                .args(["--target-env=vulkan1.2", "-O", "-o"])
                .arg(&spv)
                .arg(dir.join(name))
                .status()
                .unwrap();
            assert!(status.success(), "glslc failed on {name}");
            let fresh = std::fs::read(&spv).unwrap();
            assert_eq!(
                fresh, committed,
                "shaders/{name}.spv is stale: run vulkan-backend/shaders/build.sh and commit"
            );
        }
    }
    let _ = std::fs::remove_dir_all(&out);
}
