module gotmplcheck

go 1.19
