"""The annotation schema a generation config declares: entity types and relation types.

Descriptions go into the prompts verbatim, so they are the teacher's annotation guidelines::

    schema:
      subject: SPECIES
      entities:
        - {name: SPECIES, description: "an animal species, by common or scientific name"}
        - {name: HABITAT, description: "where the species lives"}
      relations:
        - {name: live_in, head: SPECIES, tail: HABITAT, description: "the species lives there"}
"""

from __future__ import annotations

from pydantic import Field, model_validator

from adaptlab.config import StrictModel


class EntityType(StrictModel):
    name: str = Field(
        min_length=1, pattern=r"^[A-Za-z][A-Za-z0-9_-]*$", description="the label as it appears in records (a "
        "letter, then letters, digits, _ or -)")
    description: str = Field("", description="what the type covers; goes into the prompt verbatim")


class RelationType(StrictModel):
    name: str = Field(
        min_length=1, pattern=r"^[A-Za-z][A-Za-z0-9_-]*$", description="the relation label (a letter, then letters, "
        "digits, _ or -)")
    head: str = Field(description="entity type of the relation's first argument")
    tail: str = Field(description="entity type of the relation's second argument")
    description: str = Field("", description="what the relation means; goes into the prompt verbatim")


class Schema(StrictModel):
    subject: str = Field(description="entity type of the subjects that sentences are written about")
    entities: list[EntityType] = Field(min_length=1, description="the entity types, each {name, description}")
    relations: list[RelationType] = Field([], description="the relation types, each {name, head, tail, description}")

    @model_validator(mode="after")
    def _consistent(self) -> Schema:
        names = [e.name for e in self.entities]
        if len(set(names)) != len(names):
            raise ValueError(f"entity type names must be unique, got {names}")
        if self.subject not in names:
            raise ValueError(f"subject {self.subject!r} is not one of the entity types {names}")
        rel_names = [r.name for r in self.relations]
        if len(set(rel_names)) != len(rel_names):
            raise ValueError(f"relation type names must be unique, got {rel_names}")
        for rel in self.relations:
            for role in ("head", "tail"):
                if getattr(rel, role) not in names:
                    raise ValueError(f"relation {rel.name!r}: {role} {getattr(rel, role)!r} is not an entity type")
        return self

    @property
    def entity_names(self) -> list[str]:
        return [e.name for e in self.entities]

    def relation(self, name: str) -> RelationType | None:
        return next((r for r in self.relations if r.name == name), None)
