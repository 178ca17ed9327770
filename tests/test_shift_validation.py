"""Validation apart from the training cohort: the earliest-numbered patients of each naming scheme."""

from __future__ import annotations

from medlit.data.splits import earliest_split, patient_id, patient_number


def test_the_earliest_patients_of_every_scheme_and_class_are_held_out():
    files = (
        [f"IM-{n:04d}-0001.jpeg" for n in (130, 115, 300, 200)]
        + [f"NORMAL2-IM-{n:04d}-0001.jpeg" for n in (900, 383, 1000, 500)]
        + [f"person{n}_bacteria_{k}.jpeg" for n, k in ((50, 1), (50, 2), (7, 3), (1200, 4), (600, 5), (3, 6))]
    )
    labels = [0] * 8 + [1] * 6
    patients = [patient_id(f) for f in files]
    keep, held = earliest_split(labels, patients, fraction=0.5)
    held_files = sorted(files[i] for i in held)
    assert held_files == sorted(
        [
            "IM-0115-0001.jpeg",
            "IM-0130-0001.jpeg",
            "NORMAL2-IM-0383-0001.jpeg",
            "NORMAL2-IM-0500-0001.jpeg",
            "person3_bacteria_6.jpeg",
            "person7_bacteria_3.jpeg",
            "person50_bacteria_1.jpeg",
            "person50_bacteria_2.jpeg",
        ]
    )  # fmt: skip: whole patients are taken until the share (3 of 6 pneumonia images) is reached
    assert set(keep) | set(held) == set(range(len(files))) and not set(keep) & set(held)
    # no patient on both sides
    assert not {patients[i] for i in keep} & {patients[i] for i in held}


def test_patient_numbers_are_read_per_naming_scheme():
    assert patient_number("person1") == ("person", 1)
    assert patient_number("IM-0115") == ("IM-", 115)
    assert patient_number("NORMAL2-IM-1427") == ("NORMAL2-IM-", 1427)
    assert patient_number("scan")[0] == "scan"
