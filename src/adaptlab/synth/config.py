"""Config of ``adaptlab synth generate`` (shipped example: ``adaptlab config show synth_biospecies``)."""

from __future__ import annotations

from pydantic import Field, model_validator

from adaptlab.config import StrictModel
from adaptlab.synth.schema import Schema
from adaptlab.teacher.config import TeacherConfig


class SubjectSpec(StrictModel):
    name: str = Field(min_length=1, description="the subject's common name")
    scientific_name: str | None = Field(
        None, description="its scientific name, if any; shown to the teacher beside the name")
    group: str = Field("", description="the group it belongs to (e.g. amphibians), shown to the teacher")


class SubjectsConfig(StrictModel):
    """Either enumerate ``per_group`` subjects for each group with the teacher, or list them."""

    groups: list[str] = Field([], description="groups the teacher enumerates subjects for (e.g. amphibians, birds)")
    per_group: int = Field(10, ge=1, description="subjects asked for per group")
    given: list[SubjectSpec] = Field([], description="use these subjects instead of asking the teacher")


class SentencesConfig(StrictModel):
    per_request: int = Field(5, ge=1, description="sentences asked for in one request")
    requests_per_subject: int = Field(1, ge=1, description="independent samples per subject")


class ValidationConfig(StrictModel):
    near_duplicate_threshold: float = Field(
        0.8, gt=0, le=1, description="word-trigram Jaccard similarity at which a sentence counts as a repeat")


class SynthConfig(StrictModel):
    name: str = Field("synth", description="names the run directory runs/<time>-<name> when output is not given")
    schema_: Schema = Field(
        alias="schema", description="the entity and relation types to annotate; their descriptions are the teacher's "
        "guidelines")
    teacher: TeacherConfig = Field(TeacherConfig(), description="the teacher LLM and how hard to push it")
    subjects: SubjectsConfig = Field(
        SubjectsConfig(), description="what the sentences are about: enumerated by the teacher per group, or given")
    sentences: SentencesConfig = Field(SentencesConfig(), description="how many sentences to ask for per subject")
    validation: ValidationConfig = Field(ValidationConfig(), description="checks every generated sentence goes through")
    prompts_dir: str | None = Field(None, description="folder with edited prompt templates (<name>.yaml)")
    output: str | None = Field(None, description="run directory to write (must not exist); default runs/<time>-<name>")
    progress: bool = Field(True, description="progress bars on the console")

    @model_validator(mode="after")
    def _has_subjects(self) -> SynthConfig:
        if not self.subjects.groups and not self.subjects.given:
            raise ValueError("subjects: set 'groups' (to enumerate with the teacher) or list 'given' subjects")
        return self

