"""Teacher params -> which frozen model a teacher is (`mim.targets.teacher.TeacherSource`)."""

from __future__ import annotations

from mim.params.targets import TeacherSpec
from mim.targets.teacher import TeacherSource


def teacher_source(spec: TeacherSpec) -> TeacherSource:
    return TeacherSource(kind=spec.kind, name=spec.name, weights=spec.weights, level=spec.level,
                         input_size=spec.input_size, token_norm=spec.token_norm, sha256=spec.sha256)
