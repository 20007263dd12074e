"""Tools for domain packs: finding and importing the selected pack, checking one, scaffolding a
new one from ``template/``."""
