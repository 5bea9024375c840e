//! The container image's recipe agrees with the driver: the tools the image holds are
//! exactly the programs the driver runs (`driver::exec::TOOLS`, enforced there), and the
//! Containerfile and the offline build install the same Debian packages. (Building and
//! checking the image itself is `tools/build-image`, a step of `.ci/run`.)

use deploy::root;

fn read(path: &str) -> String {
    std::fs::read_to_string(root().join(path)).unwrap()
}

#[test]
fn the_image_holds_exactly_the_tools_the_driver_runs() {
    let script = read("deploy/image/assemble-rootfs");
    let line = script.lines().find(|l| l.starts_with("TOOLS=")).expect("a TOOLS= line");
    let tools: Vec<&str> = line.trim_start_matches("TOOLS=").trim_matches('"').split(' ').collect();
    assert_eq!(tools, driver::exec::TOOLS);
}

#[test]
fn the_containerfile_and_the_offline_build_use_the_same_packages() {
    let offline = read("tools/build-image");
    let line = offline.lines().find(|l| l.starts_with("PACKAGES=")).expect("PACKAGES=");
    let mut packages: Vec<&str> = line.trim_start_matches("PACKAGES=").split(',').collect();
    packages.sort_unstable();
    let containerfile = read("deploy/image/Containerfile");
    let install = containerfile
        .lines()
        .find(|l| l.contains("apt-get install") && l.contains("e2fsprogs"))
        .expect("the tools stage's apt-get install");
    let mut listed: Vec<&str> = install
        .split_whitespace()
        .skip_while(|w| *w != "--no-install-recommends")
        .skip(1)
        .take_while(|w| *w != "\\" && *w != "&&")
        .collect();
    listed.sort_unstable();
    assert_eq!(listed, packages);
    // Both end in the same assembly step and the same image configuration.
    assert!(containerfile.contains("RUN assemble-rootfs / /rootfs /rds-csi"));
    for config in [
        "USER 65532:65532",
        "/usr/local/bin/rds-csi",
        "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    ] {
        assert!(containerfile.contains(config) && offline.contains(config), "{config}");
    }
}
