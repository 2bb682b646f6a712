"""The annotation schema: entity types, relation types, and the words that state each relation.

A generation config declares it, and the same schema drives what is specific to one dataset elsewhere:
the clause rules of ``adaptlab data convert`` and the relations derived from entity types. Descriptions
go into the prompts verbatim, so they are the teacher's annotation guidelines; ``verbs`` do not::

    schema:
      subject: SPECIES
      entities:
        - {name: SPECIES, description: "an animal species, by common or scientific name"}
        - {name: HABITAT, description: "where the species lives"}
      relations:
        - {name: live_in, head: SPECIES, tail: HABITAT, description: "the species lives there",
           verbs: [live, lives]}

A *preset* is a schema shipped with the package and chosen by name (``--preset biospecies``,
``schema: biospecies``); :data:`SCHEMA_PRESETS` lists them. Nothing outside a schema knows a
dataset's labels.
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

from pydantic import Field, model_validator

from adaptlab.config import StrictModel, read_yaml, validate_config
from adaptlab.data.boundary import ClauseGrammar
from adaptlab.errors import ConfigError

NAME_PATTERN = r"^[A-Za-z][A-Za-z0-9_-]*$"
# Preset name -> schema file under adaptlab/resources/schemas (a YAML file with a ``schema:`` section).
SCHEMA_PRESETS = {"biospecies": "biospecies.yaml"}


class EntityType(StrictModel):
    name: str = Field(min_length=1, pattern=NAME_PATTERN, description="the label of the spans (SPECIES)")
    description: str = Field("", description="what a span of this type is; the teacher's guideline")


class RelationType(StrictModel):
    name: str = Field(min_length=1, pattern=NAME_PATTERN, description="the relation label (live_in)")
    head: str = Field(description="entity type of the head (usually the subject)")
    tail: str = Field(description="entity type of the tail (the argument)")
    description: str = Field("", description="what the relation means; the teacher's guideline")
    verbs: list[str] = Field([], description=(
        "verb forms that state this relation in a clause SUBJECT VERB [ADVERB] PREP OBJECT (live, lives): "
        "they turn on the clause rules of `adaptlab data convert` (the object's type follows the verb)"))


class Schema(StrictModel):
    subject: str = Field(description="entity type of the subjects that sentences are written about")
    entities: list[EntityType] = Field(min_length=1, description="the entity types")
    relations: list[RelationType] = Field([], description="the relation types between entity types")

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
            if rel.verbs and rel.head != self.subject:
                raise ValueError(f"relation {rel.name!r} has verbs but its head {rel.head!r} is not the subject "
                                 f"{self.subject!r}: a clause states a relation of its subject")
        verbs = [v.lower() for rel in self.relations for v in rel.verbs]
        repeated = sorted({v for v in verbs if verbs.count(v) > 1})
        if repeated:
            raise ValueError(f"verbs {repeated} are given to more than one relation; a verb must fix one relation")
        return self

    @property
    def entity_names(self) -> list[str]:
        return [e.name for e in self.entities]

    def relation(self, name: str) -> RelationType | None:
        return next((r for r in self.relations if r.name == name), None)

    def clause_grammar(self) -> ClauseGrammar | None:
        """The clause grammar of :mod:`adaptlab.data.boundary`: verb form -> (relation, object type);
        None when no relation names its verbs (then the data has no clause rules)."""
        verbs = {v.lower(): (rel.name, rel.tail) for rel in self.relations for v in rel.verbs}
        return ClauseGrammar(self.subject, verbs) if verbs else None

    def relation_by_tail(self) -> dict[str, str]:
        """Argument type -> relation, for relations headed by the subject: the rule by which a tagged
        argument states its relation (HABITAT -> live_in). A ConfigError when one type is the tail of two
        such relations, since the type alone could not tell them apart."""
        by_tail: dict[str, str] = {}
        for rel in self.relations:
            if rel.head != self.subject:
                continue
            if rel.tail in by_tail:
                raise ConfigError(f"schema: {rel.tail} is the tail of both {by_tail[rel.tail]!r} and {rel.name!r}; "
                                  "relations cannot be derived from entity types")
            by_tail[rel.tail] = rel.name
        return by_tail


def load_schema(source: str | Path) -> Schema:
    """The ``schema:`` section of a YAML file (a synth config), or of ``config.yaml`` in a run directory."""
    path = Path(source)
    if path.is_dir():
        path = path / "config.yaml"
    data = read_yaml(path)
    if "schema" not in data:
        raise ConfigError(f"{path} has no 'schema' section; pass the generation config or its run directory")
    return validate_config(Schema, data["schema"], f" (schema in {path})")


def preset_schema(name: str) -> Schema:
    """A shipped schema by name; a ConfigError naming the known presets otherwise."""
    if name not in SCHEMA_PRESETS:
        raise ConfigError(f"unknown preset {name!r}; known presets: {', '.join(sorted(SCHEMA_PRESETS))}")
    return load_schema(Path(str(files("adaptlab") / "resources" / "schemas" / SCHEMA_PRESETS[name])))


def resolve_schema(source: str | Path) -> Schema:
    """A preset name (``biospecies``) or a YAML file / run directory holding a ``schema:`` section."""
    if isinstance(source, str) and source in SCHEMA_PRESETS:
        return preset_schema(source)
    if not Path(source).exists():
        raise ConfigError(f"schema {str(source)!r} is neither a preset ({', '.join(sorted(SCHEMA_PRESETS))}) "
                          "nor a file or run directory")
    return load_schema(source)
