//! The examples an app developer copies, run as they would run them: on LFW photos with the
//! models `scripts/setup.sh` installs (EFQ_TEACHER, EFQ_DETECTOR, EFQ_LFW).

#[path = "../examples/verify_photos.rs"]
#[allow(dead_code)] // its `main`
mod verify_photos;

use std::path::PathBuf;

fn photo(person: &str, n: usize) -> String {
    let lfw = std::env::var_os("EFQ_LFW")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/data/lfw"));
    let p = lfw.join(format!("raw250-sample/{person}/{person}_{n:04}.jpg"));
    assert!(p.exists(), "{} is missing: set EFQ_LFW", p.display());
    p.display().to_string()
}

#[test]
fn verify_photos_tells_one_person_from_two() {
    let same = verify_photos::run(&[photo("Akhmed_Zakayev", 1), photo("Akhmed_Zakayev", 2)])
        .expect("the example runs with the installed models");
    let other =
        verify_photos::run(&[photo("Akhmed_Zakayev", 1), photo("Adelina_Avila", 1)]).unwrap();
    assert!(
        same.similarity > 0.4 && other.similarity < 0.2,
        "same person {}, different people {}",
        same.similarity,
        other.similarity
    );
}
