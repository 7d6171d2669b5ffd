# §2.3, §4, App. B-D: task-vector similarity, spectral clustering, t-SNE and heatmaps, per
# experiment under `geometry.experiments` (weightspace.geometry). App. C's subsample runs and
# App. B's other bases are finetune.smk's variants.
GEOMETRY = SETTINGS["geometry"]


rule similarity:
    conda:
        ENVIRONMENT
    input:
        models=experiment_weights,
        bases=experiment_bases,
    output:
        paths.similarity_file("{experiment}"),
    params:
        models=experiment_models,
        include_head=GEOMETRY["include_head"],
        memory_mb=GEOMETRY["memory_mb"],
        device=config["device"],
    threads: 4
    resources:
        mem_mb=int(GEOMETRY["memory_mb"]) + 3000,
        runtime=120,  # minutes: reads every model once (the paper's 240 roberta-bases: 120 GB)
    log:
        "logs/similarity/{experiment}.log",
    script:
        "../scripts/similarity.py"


rule cluster:
    conda:
        ENVIRONMENT
    input:
        paths.similarity_file("{experiment}"),
    output:
        **paths.clustering_files("{experiment}"),
    params:
        members=experiment_records,
        grouping=experiment_grouping,
        affinity=GEOMETRY["affinity"],
        euclidean_kernel=GEOMETRY["euclidean_kernel"],
        seed=GEOMETRY["cluster_seed"],
        states=GEOMETRY["cluster_states"],
    log:
        "logs/cluster/{experiment}.log",
    localrule: True
    script:
        "../scripts/cluster.py"


rule geometry_plots:
    conda:
        ENVIRONMENT
    input:
        similarity=paths.similarity_file("{experiment}"),
        assignments=paths.clustering_files("{experiment}")["assignments"],
    output:
        tsne=report(
            paths.plot("tsne_{experiment}"),
            caption="../report/tsne.rst",
            category="Geometry",
            subcategory="{experiment}",
            labels={"experiment": "{experiment}", "figure": "t-SNE (Fig. 2, 7, 9)"},
        ),
        heatmap=report(
            paths.plot("similarity_{experiment}"),
            caption="../report/similarity.rst",
            category="Geometry",
            subcategory="{experiment}",
            labels={"experiment": "{experiment}", "figure": "cosine similarity (Fig. 8)"},
        ),
    params:
        seed=GEOMETRY["cluster_seed"],
        perplexity=GEOMETRY["tsne_perplexity"],
    log:
        "logs/plots/geometry_{experiment}.log",
    localrule: True
    script:
        "../scripts/geometry_plots.py"


rule clustering_table:
    conda:
        ENVIRONMENT
    input:
        summaries=section_inputs("geometry", clustering_files("summary")),
        f1=section_inputs("geometry", clustering_files("f1")),
    output:
        table=paths.table("clustering"),
        f1=paths.table("clustering_f1"),
        markdown=report(
            paths.table("clustering", "md"),
            caption="../report/clustering.rst",
            category="Geometry",
            subcategory="all experiments",
            labels={"item": "clustering (Table 1)"},
        ),
    log:
        "logs/tables/clustering.log",
    localrule: True
    script:
        "../scripts/clustering_table.py"
