"""Tests for featstore.manifest: every format, auto-detection, bad input, media hashes, JSONL round trip."""

from __future__ import annotations

import hashlib
import json
import os
import sys
from pathlib import Path

import pytest

from featstore.errors import DuplicateSampleError, ManifestError, UnsafePathError
from featstore.manifest import Manifest, Sample, load_manifest
from featstore.manifest.hashing import hash_file, hash_media, is_problem_hash, problem_hash
from featstore.names import DFEW_LABELS, MERR_LABELS


def write(root: Path, rel: str, data: bytes | str) -> Path:
    """Write ``data`` to ``root/rel``, creating folders."""
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(data, str):
        path.write_text(data, encoding="utf-8")
    else:
        path.write_bytes(data)
    return path


def clip(i: int) -> bytes:
    """Bytes that start like an mp4 (the manifest only hashes bytes)."""
    return b"\x00\x00\x00\x18ftypmp42" + bytes([i]) * 40


def wav(i: int) -> bytes:
    """Bytes that start like a RIFF/WAVE file."""
    return b"RIFF\x24\x00\x00\x00WAVEfmt " + bytes([i]) * 24


def merr_root(root: Path) -> Path:
    """A MERR-style dataset: clips in a nested folder, JSON annotation, label list and transcripts."""
    for i in range(3):
        write(root, f"video/part{i % 2}/sample_{i:08d}.mp4", clip(i))
    merr = {
        "sample_00000000": {
            "caption": "Smiles.",
            "smp_reason_caption": "Cheeks up.",
            "reason_caption": "Long.",
            "peak_index": 12,
            "label": "Happy",
        },
        "sample_00000001": {"caption": "Frowns.", "smp_reason_caption": "Brows down.", "peak_index": 3},
        "sample_00000002": {"caption": "Looks.", "emotion": "neutral", "AU_list": ["AU01", "AU04"]},
    }
    write(root, "MERR_fine_grained.json", json.dumps(merr, indent=2))
    write(
        root,
        "MERR_labels.txt",
        "sample_00000000 87 happy\nsample_00000001 40 angry -0.75\nsample_00000002 12 neutral\nsample_00009999 5 sad\n",
    )
    write(root, "transcription_en_all.csv", 'name,sentence\nsample_00000000,"Yes, I won!"\nsample_00000001,Go away.\n')
    return root


def csv_root(root: Path) -> Path:
    """A generic CSV dataset with a separate audio file on one row and an extra column."""
    write(root, "clips/a.mp4", clip(1))
    write(root, "clips/b.mp4", clip(2))
    write(root, "audio/b.wav", wav(2))
    write(
        root,
        "manifest.csv",
        "sample_id,video,audio,transcript,label,speaker\n"
        "a,clips/a.mp4,,Hello there.,HAPPY,spk1\n"
        "b,clips\\b.mp4,audio/b.wav,,,spk2\n",
    )
    return root


# ---------------------------------------------------------------- formats


def test_generic_csv_loads_every_field(tmp_path):
    m = load_manifest(csv_root(tmp_path))
    assert m.format == "csv" and m.root == tmp_path and m.ids == ["a", "b"]
    a, b = m
    assert (a.video, a.audio, a.transcript, a.label, a.extra) == (
        "clips/a.mp4",
        None,
        "Hello there.",
        "happy",
        {"speaker": "spk1"},
    )
    assert (b.video, b.audio, b.transcript, b.label) == ("clips/b.mp4", "audio/b.wav", None, None)
    assert a.media_hash == hash_media(tmp_path, "clips/a.mp4", None)
    assert b.media_hash == hash_media(tmp_path, "clips/b.mp4", "audio/b.wav")
    assert a.error is None and b.error is None


def test_generic_jsonl_loads_extra_object_and_keys(tmp_path):
    write(tmp_path, "v/x.mp4", clip(5))
    rows = [
        {
            "sample_id": "x",
            "video": "v/x.mp4",
            "label": "Sad",
            "caption": "c",
            "extra": {"peak_index": 4},
            "valence": -0.5,
        }
    ]
    write(tmp_path, "manifest.jsonl", "".join(json.dumps(r) + "\n" for r in rows))
    (x,) = load_manifest(tmp_path)
    assert (x.label, x.caption, x.extra) == ("sad", "c", {"peak_index": 4, "valence": -0.5})


def test_merr_joins_labels_and_transcripts_and_finds_nested_clips(tmp_path):
    m = load_manifest(merr_root(tmp_path))
    assert m.format == "merr"
    assert m.ids == ["sample_00000000", "sample_00000001", "sample_00000002"]
    s0, s1, s2 = m
    assert s0.video == "video/part0/sample_00000000.mp4" and s1.video == "video/part1/sample_00000001.mp4"
    assert (s0.caption, s0.reasoning, s0.label, s0.transcript) == ("Smiles.", "Cheeks up.", "happy", "Yes, I won!")
    assert s0.extra == {"reason_caption": "Long.", "peak_index": 12, "n_frames": 87}
    assert (s1.label, s1.transcript, s1.extra) == (
        "angry",
        "Go away.",
        {"peak_index": 3, "n_frames": 40, "valence": -0.75},
    )
    assert (s2.label, s2.transcript, s2.extra["AU_list"]) == ("neutral", None, ["AU01", "AU04"])
    assert s2.media_hash == hash_media(tmp_path, "video/part0/sample_00000002.mp4", None)


def test_merr_label_disagreeing_with_label_list_is_refused(tmp_path):
    merr_root(tmp_path)
    write(tmp_path, "MERR_labels.txt", "sample_00000000 87 sad\n")
    with pytest.raises(ManifestError, match=r"sample_00000000.*'happy'.*'sad'"):
        load_manifest(tmp_path)


def test_mer2023_label_list_whitespace_comma_and_header(tmp_path):
    for i in (1, 2, 3):
        write(tmp_path, f"clips/sample_{i}.avi", clip(i))
    write(
        tmp_path,
        "train_label.txt",
        "name n_frames label valence\nsample_1 10 Worried 1.5\nsample_2,20,doubt,-2\nsample_3\t30\tcontempt\t0\n",
    )
    m = load_manifest(tmp_path)
    assert m.format == "mer2023"
    assert [(s.sample_id, s.label, s.extra) for s in m] == [
        ("sample_1", "worried", {"n_frames": 10, "valence": 1.5}),
        ("sample_2", "doubt", {"n_frames": 20, "valence": -2.0}),
        ("sample_3", "contempt", {"n_frames": 30, "valence": 0.0}),
    ]
    assert m[0].video == "clips/sample_1.avi"
    assert isinstance(m[0].extra["n_frames"], int)


def test_mer2023_without_header_and_optional_valence(tmp_path):
    write(tmp_path, "s1.mp4", clip(1))
    write(tmp_path, "labels.txt", "s1 87 happy\n")
    (s,) = load_manifest(tmp_path, "mer2023")
    assert (s.label, s.extra, s.video) == ("happy", {"n_frames": 87}, "s1.mp4")


def test_windows_bom_and_crlf_files_load(tmp_path):
    write(tmp_path, "s1.mp4", clip(1))
    (tmp_path / "labels.txt").write_bytes(b"\xef\xbb\xbfs1 87 happy\r\n")
    (tmp_path / "transcription.csv").write_bytes(b"\xef\xbb\xbfname,sentence\r\ns1,Hi.\r\n")
    (s,) = load_manifest(tmp_path)
    assert (s.sample_id, s.label, s.extra, s.transcript) == ("s1", "happy", {"n_frames": 87}, "Hi.")


@pytest.mark.parametrize("line, message", [("s1 87 happy nan", "valence 'nan'"), ("s1 87", "3 or 4 fields")])
def test_mer2023_bad_lines_are_refused(tmp_path, line, message):
    write(tmp_path, "labels.txt", line + "\n")
    with pytest.raises(ManifestError, match=rf"line 1: .*{message}"):
        load_manifest(tmp_path, "mer2023", annotation="labels.txt")


def test_merr_entry_that_is_not_an_object_is_named(tmp_path):
    write(tmp_path, "MERR.json", '{"s1": {"caption": "x"}, "s2": "just text"}')
    with pytest.raises(ManifestError, match=r"entry 's2': expected a JSON object, got str"):
        load_manifest(tmp_path)


def test_mer2023_unknown_label_names_line_and_value(tmp_path):
    write(tmp_path, "labels.txt", "s1 87 happy\ns2 10 bored\n")
    with pytest.raises(ManifestError, match=r"labels.txt: line 2: label 'bored'"):
        load_manifest(tmp_path, annotation="labels.txt")


def test_mer2023_bad_frame_count_names_line(tmp_path):
    write(tmp_path, "labels.txt", "s1 87 happy\ns2 ten happy\n")
    with pytest.raises(ManifestError, match=r"line 2: n_frames 'ten'"):
        load_manifest(tmp_path, "mer2023")


def test_dfew_with_header_maps_labels(tmp_path):
    for name in ("00001", "00002", "00003"):
        write(tmp_path, f"Clip/original/{name}.mp4", clip(int(name)))
    write(tmp_path, "set_1_train.csv", "video_name,label\n00001,1\n00002,6\n00003,7\n")
    m = load_manifest(tmp_path)
    assert m.format == "dfew"
    assert [(s.sample_id, s.label) for s in m] == [("00001", "happy"), ("00002", "disgust"), ("00003", "fear")]
    assert m[1].video == "Clip/original/00002.mp4"


def test_dfew_without_header_and_unpadded_names_find_padded_clips(tmp_path):
    write(tmp_path, "clips/00012.mp4", clip(12))
    write(tmp_path, "test.csv", "12,3\n13,4\n")
    m = load_manifest(tmp_path, "dfew")
    assert [(s.sample_id, s.label, s.video) for s in m] == [("12", "neutral", "clips/00012.mp4"), ("13", "angry", None)]
    assert m[1].error.startswith("missing video file 13")


@pytest.mark.parametrize("bad", ["0", "8", "x", "-1", "2.0"])
def test_dfew_label_out_of_range_names_line_and_value(tmp_path, bad):
    write(tmp_path, "dfew.csv", f"order,label\n1,1\n2,{bad}\n")
    with pytest.raises(ManifestError, match=rf"dfew.csv: line 3: DFEW label '{bad}'"):
        load_manifest(tmp_path, "dfew", annotation="dfew.csv")


def test_constants_match_the_paper():
    assert MERR_LABELS[:3] == ("neutral", "angry", "happy") and len(MERR_LABELS) == 9
    assert DFEW_LABELS[6] == "disgust" and sorted(DFEW_LABELS) == list(range(1, 8))


# ---------------------------------------------------------------- auto-detection


def test_auto_detection_picks_each_format(tmp_path):
    roots = {"csv": csv_root(tmp_path / "c"), "merr": merr_root(tmp_path / "m")}
    write(tmp_path, "d/x.csv", "1,2\n")
    write(tmp_path, "l/list.txt", "s 3 sad\n")
    write(tmp_path, "j/manifest.jsonl", json.dumps({"sample_id": "s", "video": "s.mp4"}) + "\n")
    for name in "dlj":
        write(tmp_path, f"{name}/README.txt", "A dataset.\nNothing to see.\n")
    roots.update(dfew=tmp_path / "d", mer2023=tmp_path / "l", jsonl=tmp_path / "j")
    assert {fmt: load_manifest(root, hash_media=False).format for fmt, root in roots.items()} == {
        fmt: fmt for fmt in roots
    }


def test_auto_detection_refuses_two_candidates_naming_both(tmp_path):
    csv_root(tmp_path)
    write(tmp_path, "MERR_coarse.json", json.dumps({"a": {"caption": "x"}}))
    with pytest.raises(ManifestError, match=r"MERR_coarse.json.*manifest.csv.*pass format= or annotation="):
        load_manifest(tmp_path)
    assert load_manifest(tmp_path, "csv").format == "csv"
    assert load_manifest(tmp_path, annotation="MERR_coarse.json", hash_media=False).format == "merr"


def test_two_merr_jsons_are_ambiguous(tmp_path):
    merr_root(tmp_path)
    write(tmp_path, "MERR_coarse_grained.json", "{}")
    with pytest.raises(ManifestError, match=r"MERR_coarse_grained.json.*MERR_fine_grained.json"):
        load_manifest(tmp_path, "merr")


def test_two_transcript_files_are_ambiguous(tmp_path):
    csv_root(tmp_path)
    write(tmp_path, "transcripts_zh.csv", "name,sentence\n")
    write(tmp_path, "transcription_en.csv", "name,sentence\n")
    with pytest.raises(ManifestError, match=r"transcript files.*transcription_en.csv.*transcripts_zh.csv"):
        load_manifest(tmp_path)


def test_no_annotation_found(tmp_path):
    write(tmp_path, "a.mp4", clip(1))
    write(tmp_path, "notes.txt", "hello world\n")
    with pytest.raises(ManifestError, match="no annotation files found"):
        load_manifest(tmp_path)


def test_unknown_format_and_missing_root(tmp_path):
    with pytest.raises(ManifestError, match="'avi'"):
        load_manifest(tmp_path, "avi")
    with pytest.raises(ManifestError, match="is not a folder"):
        load_manifest(tmp_path / "nope")


# ---------------------------------------------------------------- unsafe paths, duplicates, bad input


class Opened:
    """Every path this process opens while active (a real audit hook, nothing mocked)."""

    paths: list[str] = []
    active = False

    @classmethod
    def hook(cls, event: str, args: tuple) -> None:
        if cls.active and event == "open" and isinstance(args[0], (str, bytes, os.PathLike)):
            cls.paths.append(os.fsdecode(args[0]))

    def __enter__(self) -> list[str]:
        Opened.paths, Opened.active = [], True
        return Opened.paths

    def __exit__(self, *exc: object) -> None:
        Opened.active = False


sys.addaudithook(Opened.hook)


def outside(root: Path, paths: list[str], *targets: str) -> list[str]:
    """The opened paths that name one of ``targets`` or lie beside ``root`` (in the test's
    folder, where its outside files are) but not in it. Python's own module files, which an
    import may open at any time, are not the dataset's business."""
    real, beside = root.resolve(), root.parent.resolve()
    hits = []
    for p in paths:
        where = Path(os.path.realpath(os.path.join(root, p)))
        if p in targets or (where.is_relative_to(beside) and not where.is_relative_to(real)):
            hits.append(p)
    return hits


@pytest.mark.parametrize(
    ("video", "why"),
    [
        ("/etc/passwd", "is absolute"),
        ("../x.mp4", "escapes the dataset root"),
        ("a/../../x.mp4", "escapes the dataset root"),
        ("C:\\clips\\x.mp4", "is absolute"),
    ],
)
def test_unsafe_path_is_a_sample_problem_and_never_opened(tmp_path, video, why):
    root = tmp_path / "root"
    write(root, "clips/ok.mp4", clip(1))
    write(tmp_path, "x.mp4", clip(2))
    write(root, "manifest.csv", f"sample_id,video\nok,clips/ok.mp4\nevil_7,{video}\n")
    with Opened() as opened:
        m = load_manifest(root)
    assert m.ids == ["ok", "evil_7"] and [s.sample_id for s in m.problems] == ["evil_7"]
    evil = m.get("evil_7")
    assert evil.video is None  # nothing downstream can open it
    assert evil.error.startswith(f"unsafe video path: media path {video!r} {why}"), evil.error
    assert evil.media_hash == problem_hash([f"unsafe:video:{video}"]) and is_problem_hash(evil.media_hash)
    assert any(p.endswith("clips/ok.mp4") for p in opened)  # the hook sees the opens it should
    assert outside(root, opened, video) == []


def test_symlink_out_of_root_is_a_sample_problem_and_never_opened(tmp_path):
    root = tmp_path / "root"
    write(tmp_path, "outside/secret.mp4", clip(9))
    write(root, "ok.mp4", clip(1))
    os.symlink(tmp_path / "outside", root / "clips")
    write(root, "manifest.csv", "sample_id,video\nok,ok.mp4\nleaky,clips/secret.mp4\n")
    with Opened() as opened:
        m = load_manifest(root)
    leaky = m.get("leaky")
    assert leaky.video is None and "outside the dataset root" in leaky.error and "clips/secret.mp4" in leaky.error
    assert leaky.media_hash == problem_hash(["unsafe:video:clips/secret.mp4"])
    assert any(p.endswith("ok.mp4") for p in opened) and outside(root, opened) == []


def test_symlinked_clip_found_by_name_is_a_problem_too(tmp_path):
    root = merr_root(tmp_path / "root")
    (root / "video/part0/sample_00000000.mp4").unlink()
    write(tmp_path, "elsewhere.mp4", clip(7))
    os.symlink(tmp_path / "elsewhere.mp4", root / "video/part0/sample_00000000.mp4")
    with Opened() as opened:
        m = load_manifest(root)
    bad = m.get("sample_00000000")
    assert bad.video is None and bad.error.startswith("unsafe video path: media path 'video/part0/sample_00000000.mp4'")
    assert [s.sample_id for s in m.problems] == ["sample_00000000"] and outside(root, opened) == []


def test_ids_the_store_cannot_hold_are_refused_naming_the_row(tmp_path):
    write(tmp_path, "a.mp4", clip(1))
    long_id = "x" * 129
    write(tmp_path, "manifest.csv", f"sample_id,video\nok,a.mp4\n{long_id},a.mp4\n")
    with pytest.raises(ManifestError, match=r"manifest.csv: line 3: sample id 'x+' is longer than 128"):
        load_manifest(tmp_path)
    write(tmp_path, "manifest.csv", "sample_id,video\nok,a.mp4\n,a.mp4\n")
    with pytest.raises(ManifestError, match=r"manifest.csv: line 3: sample_id is missing or empty"):
        load_manifest(tmp_path)


def test_duplicate_ids_are_all_named(tmp_path):
    write(tmp_path, "manifest.csv", "sample_id,video\na,a.mp4\nb,b.mp4\na,c.mp4\nc,c.mp4\nb,d.mp4\n")
    with pytest.raises(DuplicateSampleError) as info:
        load_manifest(tmp_path)
    message = str(info.value)
    assert "['a', 'b']" in message and "line 2" in message and "line 4" in message and "'c'" not in message


def test_duplicate_keys_in_merr_json_are_named(tmp_path):
    write(tmp_path, "MERR.json", '{"s1": {"caption": "x"}, "s2": {}, "s1": {"caption": "y"}}')
    with pytest.raises(DuplicateSampleError, match=r"\['s1'\]"):
        load_manifest(tmp_path)


def test_two_clips_with_one_name_are_both_named(tmp_path):
    merr_root(tmp_path)
    write(tmp_path, "backup/sample_00000001.avi", clip(8))
    with pytest.raises(ManifestError, match=r"backup/sample_00000001.avi.*video/part1/sample_00000001.mp4"):
        load_manifest(tmp_path)


def test_malformed_json_names_file_and_line(tmp_path):
    write(tmp_path, "MERR.json", '{\n  "s1": {"caption": "x"},\n  "s2": {"caption": }\n}\n')
    with pytest.raises(ManifestError, match=r"MERR.json: line 3: invalid JSON"):
        load_manifest(tmp_path)


def test_malformed_jsonl_and_csv_name_file_and_line(tmp_path):
    write(tmp_path, "manifest.jsonl", '{"sample_id": "a", "video": "a.mp4"}\n{"sample_id": \n')
    with pytest.raises(ManifestError, match=r"manifest.jsonl: line 2: invalid JSON"):
        load_manifest(tmp_path)
    write(tmp_path, "m.csv", "sample_id,video\na,a.mp4\nb,b.mp4,extra\n")
    with pytest.raises(ManifestError, match=r"m.csv: line 3: expected 2 fields"):
        load_manifest(tmp_path, "csv", annotation="m.csv")
    write(tmp_path, "n.csv", "sample_id,path\na,a.mp4\n")
    with pytest.raises(ManifestError, match=r"n.csv: line 1: .*lacks column\(s\) \['video'\]"):
        load_manifest(tmp_path, "csv", annotation="n.csv")


@pytest.mark.parametrize(
    "name, text",
    [("manifest.csv", "sample_id,video\n"), ("manifest.csv", ""), ("MERR.json", "{}"), ("manifest.jsonl", "\n")],
)
def test_empty_manifest_is_refused(tmp_path, name, text):
    write(tmp_path, name, text)
    with pytest.raises(ManifestError, match="no samples|empty"):
        load_manifest(tmp_path)


def test_transcript_disagreeing_with_manifest_is_refused(tmp_path):
    csv_root(tmp_path)
    write(tmp_path, "transcription.csv", "name,sentence\na,Goodbye.\n")
    with pytest.raises(ManifestError, match=r"'a'.*'Hello there.'.*'Goodbye.'"):
        load_manifest(tmp_path)


# ---------------------------------------------------------------- media: missing files, hashes


def test_missing_media_is_recorded_per_sample_and_the_rest_loads(tmp_path):
    write(tmp_path, "clips/a.mp4", clip(1))
    write(tmp_path, "clips/c.mp4", clip(3))
    write(
        tmp_path,
        "manifest.csv",
        "sample_id,video,audio\na,clips/a.mp4,\nb,clips/b.mp4,\nc,clips/c.mp4,audio/c.wav\nd,,\n",
    )
    m = load_manifest(tmp_path)
    assert m.ids == ["a", "b", "c", "d"]
    assert [s.error for s in m] == [
        None,
        "missing video file clips/b.mp4",
        "missing audio file audio/c.wav",
        "no media: video and audio are both empty",
    ]
    assert [s.sample_id for s in m.usable] == ["a"] and [s.sample_id for s in m.problems] == ["b", "c", "d"]
    assert m.get("a").media_hash == hash_media(tmp_path, "clips/a.mp4", None)
    assert [s.media_hash for s in m.problems] == [
        problem_hash(["missing:video:clips/b.mp4"]),
        problem_hash(["missing:audio:audio/c.wav"]),
        problem_hash(["no-media"]),
    ]
    assert not is_problem_hash(m.get("a").media_hash) and all(is_problem_hash(s.media_hash) for s in m.problems)
    assert m.get("b").annotation()["error"] == "missing video file clips/b.mp4"
    assert "error" not in m.get("a").annotation()


def test_problem_hash_changes_when_the_file_appears_or_the_problem_changes(tmp_path):
    write(tmp_path, "manifest.csv", "sample_id,video\na,clips/a.mp4\n")
    missing = load_manifest(tmp_path).get("a")
    assert missing.media_hash == load_manifest(tmp_path).get("a").media_hash  # stable across loads
    (tmp_path / "clips/a.mp4").mkdir(parents=True)
    not_a_file = load_manifest(tmp_path).get("a")
    assert not_a_file.error == "video path clips/a.mp4 is not a regular file"
    assert not_a_file.media_hash == problem_hash(["unreadable:video:clips/a.mp4: not a regular file"])
    (tmp_path / "clips/a.mp4").rmdir()
    write(tmp_path, "clips/a.mp4", clip(1))
    present = load_manifest(tmp_path).get("a")
    assert present.error is None and present.media_hash == hash_media(tmp_path, "clips/a.mp4", None)
    assert len({missing.media_hash, not_a_file.media_hash, present.media_hash}) == 3


def test_media_hash_changes_with_one_byte_and_is_stable_otherwise(tmp_path):
    csv_root(tmp_path)
    first = {s.sample_id: s.media_hash for s in load_manifest(tmp_path)}
    assert first == {s.sample_id: s.media_hash for s in load_manifest(tmp_path)}
    data = bytearray(clip(2))
    data[30] ^= 1
    write(tmp_path, "clips/b.mp4", bytes(data))
    second = {s.sample_id: s.media_hash for s in load_manifest(tmp_path)}
    assert second["a"] == first["a"] and second["b"] != first["b"]
    write(tmp_path, "audio/b.wav", wav(3))
    assert load_manifest(tmp_path).get("b").media_hash not in (first["b"], second["b"])


def test_hash_media_framing_is_exact_and_unambiguous(tmp_path):
    write(tmp_path, "v.mp4", b"abcdef")
    write(tmp_path, "a.wav", b"gh")
    expected = hashlib.sha256(
        b"video\x00" + (6).to_bytes(8, "big") + b"abcdef" + b"audio\x00" + (2).to_bytes(8, "big") + b"gh"
    ).hexdigest()
    assert hash_media(tmp_path, "v.mp4", "a.wav", chunk=4) == expected
    write(tmp_path, "v2.mp4", b"abcd")
    write(tmp_path, "a2.wav", b"efgh")  # the same bytes split differently between the two files
    assert hash_media(tmp_path, "v2.mp4", "a2.wav") != expected
    assert hash_media(tmp_path, None, "v.mp4") != hash_media(tmp_path, "v.mp4", None)
    assert hash_file(tmp_path / "v.mp4", chunk=1) == hashlib.sha256(b"abcdef").hexdigest()
    with pytest.raises(ValueError, match="both are None"):
        hash_media(tmp_path, None, None)
    with pytest.raises(UnsafePathError):
        hash_media(tmp_path, "../v.mp4", None)


def test_hash_media_false_leaves_hashes_empty(tmp_path):
    m = load_manifest(csv_root(tmp_path), hash_media=False)
    assert [s.media_hash for s in m] == [None, None] and [s.error for s in m] == [None, None]


def test_unreadable_media_is_a_per_sample_error(tmp_path, monkeypatch):
    from featstore.manifest import media_files as manifest_media

    real = manifest_media.hashing.hash_media

    def flaky(root, video, audio):
        if video == "clips/a.mp4":
            raise PermissionError(13, "Permission denied", str(root / video))
        return real(root, video, audio)

    monkeypatch.setattr(manifest_media.hashing, "hash_media", flaky)
    m = load_manifest(csv_root(tmp_path))
    assert m.get("a").error == "cannot read video file clips/a.mp4: PermissionError: Permission denied"
    assert m.get("a").media_hash == problem_hash(["unreadable:video:clips/a.mp4: PermissionError"])
    assert m.get("b").error is None and m.get("b").media_hash == real(tmp_path, "clips/b.mp4", "audio/b.wav")


# ---------------------------------------------------------------- Manifest object and JSONL round trip


def test_jsonl_round_trip_is_exact(tmp_path):
    m = load_manifest(merr_root(tmp_path / "data"))
    (tmp_path / "data/video/part1/sample_00000001.mp4").unlink()
    m = load_manifest(tmp_path / "data")
    assert m.get("sample_00000001").error is not None
    m.to_jsonl(tmp_path / "out.jsonl")
    lines = (tmp_path / "out.jsonl").read_text(encoding="utf-8").splitlines()
    assert json.loads(lines[0]) == {
        "featstore_manifest": 1,
        "root": str(tmp_path / "data"),
        "format": "merr",
        "samples": 3,
    }
    assert len(lines) == 4
    back = Manifest.from_jsonl(tmp_path / "out.jsonl")
    assert back == m and back.root == m.root and back.samples == m.samples
    assert back.get("sample_00000000").extra == {"reason_caption": "Long.", "peak_index": 12, "n_frames": 87}


def test_from_jsonl_refuses_bad_files(tmp_path):
    write(tmp_path, "x.jsonl", '{"sample_id": "a", "video": "a.mp4"}\n')
    with pytest.raises(ManifestError, match=r"x.jsonl: line 1: not a featstore manifest"):
        Manifest.from_jsonl(tmp_path / "x.jsonl")
    header = json.dumps({"featstore_manifest": 1, "root": "/d", "format": "csv", "samples": 2})
    write(tmp_path, "y.jsonl", header + '\n{"sample_id": "a", "video": null, "colour": 1}\n')
    with pytest.raises(ManifestError, match=r"y.jsonl: line 2: .*unknown keys \['colour'\]"):
        Manifest.from_jsonl(tmp_path / "y.jsonl")
    write(tmp_path, "z.jsonl", header + '\n{"sample_id": "a", "video": null}\n')
    with pytest.raises(ManifestError, match=r"header says 2 samples, file holds 1"):
        Manifest.from_jsonl(tmp_path / "z.jsonl")


def test_manifest_access_and_validation(tmp_path):
    m = load_manifest(csv_root(tmp_path))
    assert len(m) == 2 and m[1].sample_id == "b" and m.get("b") is m[1]
    with pytest.raises(KeyError, match="'zzz'"):
        m.get("zzz")
    with pytest.raises(DuplicateSampleError, match=r"\['a'\]"):
        Manifest(tmp_path, "csv", (Sample("a", None), Sample("a", "x.mp4")))
    with pytest.raises(ManifestError, match="sample_id"):
        Sample("", "x.mp4")


def test_sample_dict_round_trip_and_immutable_extra():
    extra = {"peak_index": 3, "au": [1, 2]}
    s = Sample("s", "v.mp4", label="sad", extra=extra, media_hash="ab" * 32)
    extra["au"].append(3)
    assert s.extra == {"peak_index": 3, "au": [1, 2]}
    d = s.to_dict()
    d["extra"]["au"].append(4)
    assert s.extra["au"] == [1, 2] and Sample.from_dict(s.to_dict()) == s
    assert hash(s) == hash(Sample.from_dict(s.to_dict()))
