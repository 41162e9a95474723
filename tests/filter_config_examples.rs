//! Every example in filter-config/ loads, with the filter's own parser, without errors.

use app_auth_filter::config::Config;

#[test]
fn every_example_configuration_loads() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("filter-config");
    let mut seen = 0;
    for entry in std::fs::read_dir(&dir).expect("filter-config/") {
        let path = entry.expect("entry").path();
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default()
            .to_owned();
        if !name.ends_with(".json")
            || name.ends_with(".schema.json")
            || name.ends_with(".meta.json")
        {
            continue;
        }
        let bytes = std::fs::read(&path).expect("read");
        match Config::parse(&bytes) {
            Ok((config, warnings)) => {
                assert!(
                    warnings.is_empty(),
                    "{name}: unexpected warnings {warnings:?}"
                );
                assert!(!config.policies.is_empty(), "{name}");
            }
            Err(errors) => panic!("{name} is refused: {errors:?}"),
        }
        seen += 1;
    }
    assert!(
        seen >= 3,
        "expected the example configurations, found {seen}"
    );
}
