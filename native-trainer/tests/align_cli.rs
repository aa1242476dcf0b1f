//! `trainer align` end to end: sub-folders kept, formats kept, photos without a face and
//! unreadable files reported, crops like the published `aligned112` ones.

use std::path::PathBuf;
use std::process::Command;

use efq_tests::lfw;

fn detector() -> PathBuf {
    let p = std::env::var_os("EFQ_DETECTOR")
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME")
                .map(|h| PathBuf::from(h).join(".cache/efquantface/models/scrfd_500m_bnkps.onnx"))
        })
        .expect("EFQ_DETECTOR or HOME must be set");
    assert!(
        p.exists(),
        "detector {} missing: run `. scripts/setup.sh`",
        p.display()
    );
    p
}

#[test]
fn align_writes_crops_in_place_and_reports_misses() {
    let src = tempfile::tempdir().unwrap();
    let dst = tempfile::tempdir().unwrap();
    let raw = lfw().join("raw250-sample");
    let a = "Akhmed_Zakayev/Akhmed_Zakayev_0001.jpg";
    let b = "Allen_Iverson/Allen_Iverson_0001.jpg";
    std::fs::create_dir_all(src.path().join("sub/deeper")).unwrap();
    std::fs::copy(raw.join(a), src.path().join("sub/a.jpg")).unwrap();
    image::open(raw.join(b))
        .unwrap()
        .save(src.path().join("sub/deeper/b.png"))
        .unwrap();
    image::RgbImage::from_pixel(250, 250, image::Rgb([128, 128, 128]))
        .save(src.path().join("blank.jpg"))
        .unwrap();
    std::fs::write(src.path().join("broken.jpg"), b"not a jpeg").unwrap();
    std::fs::write(src.path().join("notes.txt"), b"ignored").unwrap();

    let o = Command::new(env!("CARGO_BIN_EXE_trainer"))
        .arg("align")
        .arg(src.path())
        .arg(dst.path())
        .arg("--detector")
        .arg(detector())
        .arg("--json")
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let report: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(report["images"], 4, "{report}");
    assert_eq!(report["aligned"], 2, "{report}");
    assert_eq!(
        report["no_face"],
        serde_json::json!(["blank.jpg"]),
        "{report}"
    );
    assert_eq!(report["failed"][0]["image"], "broken.jpg", "{report}");
    let saved: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dst.path().join("align-report.json")).unwrap())
            .unwrap();
    assert_eq!(saved, report);
    assert!(!dst.path().join("blank.jpg").exists());

    let png = std::fs::read(dst.path().join("sub/deeper/b.png")).unwrap();
    assert_eq!(&png[1..4], b"PNG", "a PNG photo gives a PNG crop");
    for (ours, theirs) in [("sub/a.jpg", a), ("sub/deeper/b.png", b)] {
        let ours = image::open(dst.path().join(ours)).unwrap().to_rgb8();
        let theirs = image::open(lfw().join("aligned112").join(theirs))
            .unwrap()
            .to_rgb8();
        assert_eq!(ours.dimensions(), (112, 112));
        let mad = ours
            .as_raw()
            .iter()
            .zip(theirs.as_raw())
            .map(|(x, y)| (*x as f64 - *y as f64).abs())
            .sum::<f64>()
            / ours.as_raw().len() as f64;
        eprintln!("mean |crop − aligned112| = {mad:.2} grey levels");
        assert!(
            mad < 6.0,
            "crop differs from aligned112 by {mad} grey levels on average"
        );
    }
}

fn trainer(args: &[&std::ffi::OsStr]) -> serde_json::Value {
    let o = Command::new(env!("CARGO_BIN_EXE_trainer"))
        .args(args)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    serde_json::from_slice(&o.stdout).unwrap()
}

/// `trainer verify` of two raw photos = `trainer align` (lossless PNG crops) then `trainer
/// verify` of the crops: the same faces, the same similarity to the bit; and it says which face
/// of a two-face photo it used.
#[test]
fn verify_of_raw_photos_equals_align_then_verify_of_the_crops() {
    let src = tempfile::tempdir().unwrap();
    let dst = tempfile::tempdir().unwrap();
    let raw = lfw().join("raw250-sample");
    for (name, rel) in [
        ("a.png", "Allen_Iverson/Allen_Iverson_0001.jpg"),
        ("b.png", "Anna_Faris/Anna_Faris_0001.jpg"),
    ] {
        image::open(raw.join(rel))
            .unwrap()
            .save(src.path().join(name))
            .unwrap();
    }
    let det = detector();
    let (s, d) = (src.path(), dst.path());
    let os = |p: &std::path::Path| p.as_os_str().to_owned();
    trainer(&[
        "align".as_ref(),
        s.as_os_str(),
        d.as_os_str(),
        "--detector".as_ref(),
        det.as_os_str(),
        "--json".as_ref(),
    ]);
    let verify = |a: std::ffi::OsString, b: std::ffi::OsString| {
        trainer(&[
            "verify".as_ref(),
            "--backend".as_ref(),
            "cpu".as_ref(),
            "--detector".as_ref(),
            det.as_os_str(),
            "--json".as_ref(),
            &a,
            &b,
        ])
    };
    let photos = verify(os(&s.join("a.png")), os(&s.join("b.png")));
    let crops = verify(os(&d.join("a.png")), os(&d.join("b.png")));
    assert_eq!(
        photos["similarity"], crops["similarity"],
        "{photos}\n{crops}"
    );
    assert_eq!(photos["b_face"]["faces"], 2, "{photos}");
    assert!(
        crops.get("a_face").is_none(),
        "a crop is used as it is: {crops}"
    );
}
