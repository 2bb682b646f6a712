"""Config of ``adaptlab synth generate`` (shipped example: ``adaptlab config show synth_biospecies``)."""

from __future__ import annotations

from pydantic import Field, model_validator

from adaptlab.config import StrictModel
from adaptlab.synth.schema import Schema
from adaptlab.teacher.config import TeacherConfig


class SubjectSpec(StrictModel):
    name: str = Field(min_length=1)
    scientific_name: str | None = None
    group: str = ""


class SubjectsConfig(StrictModel):
    """Either enumerate ``per_group`` subjects for each group with the teacher, or list them."""

    groups: list[str] = []
    per_group: int = Field(10, ge=1)
    given: list[SubjectSpec] = Field([], description="use these subjects instead of asking the teacher")


class SentencesConfig(StrictModel):
    per_request: int = Field(5, ge=1, description="sentences asked for in one request")
    requests_per_subject: int = Field(1, ge=1, description="independent samples per subject")


class ValidationConfig(StrictModel):
    near_duplicate_threshold: float = Field(
        0.8, gt=0, le=1, description="word-trigram Jaccard similarity at which a sentence counts as a repeat")


class SynthConfig(StrictModel):
    name: str = "synth"
    schema_: Schema = Field(alias="schema")
    teacher: TeacherConfig = TeacherConfig()
    subjects: SubjectsConfig = SubjectsConfig()
    sentences: SentencesConfig = SentencesConfig()
    validation: ValidationConfig = ValidationConfig()
    prompts_dir: str | None = Field(None, description="folder with edited prompt templates (<name>.yaml)")
    output: str | None = None
    progress: bool = True

    @model_validator(mode="after")
    def _has_subjects(self) -> SynthConfig:
        if not self.subjects.groups and not self.subjects.given:
            raise ValueError("subjects: set 'groups' (to enumerate with the teacher) or list 'given' subjects")
        return self

